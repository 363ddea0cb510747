#!/usr/bin/env bash
# Instruction counts of the proxy's per-connection path (accept, SO_ORIGINAL_DST, peek, decide,
# dial, relay setup and teardown, event), measured with callgrind: deterministic where wall-clock
# numbers on this noisy 2-core machine are not. Run as root (the bench builds testbed namespaces).
#
#   bench/callgrind/run.sh            # builds the release bench, prints Ir per connection
#   BIN=path/to/palisade-bench bench/callgrind/run.sh   # an already built binary
#   KINDS=dns bench/callgrind/run.sh   # only some of conns, tls, dns
#
# Only instructions executed inside the proxy's accept loop and its per-connection tasks are
# counted (--toggle-collect on palisade_firewall::proxy::accept::Proxy::run*, callees included): the
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
printf '| scenario | connections (dns: queries) through the proxy | Ir (user space, proxy) | Ir per connection |\n|---|---|---|---|\n'
for kind in ${KINDS:-conns tls dns}; do
  case "$kind" in
    # Everything is collected; the inclusive cost of the resolver's serving future (its UDP
    # loop is inlined there) and of the query tasks it spawns is read off below. (A toggle
    # would be switched off again by a nested function that matches it too.)
    dns) toggles=(); args=(--only dns) ;;
    *) toggles=(--toggle-collect='palisade_firewall::proxy::accept::Proxy::run*')
       args=(--only "$kind" --conn-secs 3) ;;
  esac
  timeout -s KILL 600 valgrind --tool=callgrind --callgrind-out-file="$OUT/$kind.out" \
    "${toggles[@]}" \
    "$BIN" "${args[@]}" --reps 1 --out "$OUT" >"$OUT/$kind.log" 2>&1 || {
      echo "callgrind run for $kind failed; see $OUT/$kind.log" >&2; exit 1; }
  log=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/$kind.log")
  if [ "$kind" = dns ]; then
    # Queries dnsperf saw answered by Palisade (throughput and latency runs, warm-ups included).
    conns=$(grep 'config="Palisade' <<<"$log" | sed -n 's/.* completed=\([0-9.]*\).*/\1/p' \
      | awk '{s+=$1} END {printf "%d", s}')
  else
    conns=$(grep 'path="Palisade"' <<<"$log" | sed -n 's/.* amount=\([0-9.]*\).*/\1/p' \
      | awk '{s+=$1} END {printf "%d", s}')
  fi
  if [ "$kind" = dns ]; then
    ir=$(callgrind_annotate --inclusive=yes --threshold=100 "$OUT/$kind.out" \
      | grep -E 'dns::server::(DnsServer::run|serve_udp::\{\{closure\}\}|Datagram::answer_now)::\{\{closure\}\} \[' \
      | sort -u | awk '{gsub(",", "", $1); s+=$1} END {printf "%.0f", s}')
  else
    ir=$(grep -E '^(summary|totals):' "$OUT/$kind.out" | head -1 | awk '{print $2}')
  fi
  if [ -z "$conns" ] || [ "$conns" -eq 0 ] || [ -z "$ir" ]; then
    echo "no connection count or no Ir for $kind; see $OUT/$kind.log" >&2; exit 1
  fi
  printf '| %s | %s | %s | %s |\n' "$kind" "$conns" "$ir" "$((ir / conns))"
done
echo
echo "callgrind files: $OUT/<kind>.out (callgrind_annotate --inclusive=yes <file>)"
