#!/usr/bin/env bash
# Instruction counts of the proxy's per-connection path (accept, SO_ORIGINAL_DST, peek, decide,
# dial, relay setup and teardown, event), measured with callgrind: deterministic where wall-clock
# numbers on this noisy 2-core machine are not. Run as root (the bench builds testbed namespaces).
#
#   bench/callgrind/run.sh            # builds the release bench, prints Ir per connection
#   BIN=path/to/palisade-bench bench/callgrind/run.sh   # an already built binary
#
# Only instructions executed inside the proxy's accept loop and its per-connection tasks are
# counted (--toggle-collect on palisade_firewall::proxy::Proxy::run*, callees included): the
# runtime's scheduling between polls and all kernel work (TCP, netfilter) are not. The bench
# logs how many connections went through the proxy (warm-up included); the script divides.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -p palisade-bench
  BIN="${CARGO_TARGET_DIR:-target}/release/palisade-bench"
fi
OUT="${OUT:-$(mktemp -d /tmp/palisade-callgrind.XXXXXX)}"
mkdir -p "$OUT"
printf '| scenario | connections through the proxy | Ir (user space, proxy) | Ir per connection |\n|---|---|---|---|\n'
for kind in conns tls; do
  timeout -s KILL 300 valgrind --tool=callgrind --callgrind-out-file="$OUT/$kind.out" \
    --toggle-collect='palisade_firewall::proxy::Proxy::run*' \
    "$BIN" --only "$kind" --reps 1 --conn-secs 3 --out "$OUT" >"$OUT/$kind.log" 2>&1 || {
      echo "callgrind run for $kind failed; see $OUT/$kind.log" >&2; exit 1; }
  conns=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/$kind.log" | grep 'path="Palisade"' \
    | sed -n 's/.* amount=\([0-9.]*\).*/\1/p' | awk '{s+=$1} END {printf "%d", s}')
  ir=$(grep -E '^(summary|totals):' "$OUT/$kind.out" | head -1 | awk '{print $2}')
  if [ -z "$conns" ] || [ "$conns" -eq 0 ] || [ -z "$ir" ]; then
    echo "no connection count or no Ir for $kind; see $OUT/$kind.log" >&2; exit 1
  fi
  printf '| %s | %s | %s | %s |\n' "$kind" "$conns" "$ir" "$((ir / conns))"
done
echo
echo "callgrind files: $OUT/{conns,tls}.out (callgrind_annotate --inclusive=yes <file>)"
