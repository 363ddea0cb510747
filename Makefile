# Palisade: two commands on a fresh Debian machine.
#   make run   installs what is missing, builds, starts the daemon on its embedded defaults
#   make test  installs what is missing, then runs every check
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Debian packages the daemon and the tests drive for real: runc containers, nftables,
# network namespaces, the clients the tests run inside sandboxes, and the headless browser
# (with its WebDriver) that tests the web console.
APT_PACKAGES := nftables runc iproute2 tini catatonit curl openssl ca-certificates \
	dnsutils netcat-openbsd socat procps nodejs git iputils-ping debootstrap python3 \
	chromium chromium-driver
# The SDK versions the compatibility tests run against (see tests/compat/).
LEAP0_VERSIONS := 0.6.1 0.8.0
STAMP := target/.stamps

.PHONY: help run test deps apt venv check fmt locks clippy unit fuzz bench bench-deps clean

help:
	@echo "make run    install what is missing, build, start the daemon"
	@echo "make test   install what is missing, run every check"

deps: apt venv

apt: $(STAMP)/apt
$(STAMP)/apt: Makefile
	@missing=(); for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing+=("$$p"); \
	done; \
	if [ $${#missing[@]} -gt 0 ]; then \
	  echo "installing: $${missing[*]}"; \
	  if [ "$$(id -u)" -ne 0 ]; then echo "error: installing packages needs root (run make as root)" >&2; exit 1; fi; \
	  apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$${missing[@]}"; \
	fi
	@mkdir -p $(STAMP) && touch $@

# The leap0 SDK needs CPython >= 3.12. Take one from pyenv or PATH; never the 3.11 default.
venv: $(STAMP)/venv
$(STAMP)/venv: Makefile tools/find-python
	@py=$$(tools/find-python); \
	for v in $(LEAP0_VERSIONS); do \
	  d=.venv-leap0-$$v; \
	  if [ ! -x "$$d/bin/python" ] || ! "$$d/bin/python" -c "import leap0, pytest" 2>/dev/null; then \
	    echo "creating $$d with $$py"; rm -rf "$$d"; "$$py" -m venv "$$d"; \
	    "$$d/bin/pip" install -q --disable-pip-version-check "leap0==$$v" pytest requests httpx; \
	  fi; \
	done
	@mkdir -p $(STAMP) && touch $@

fmt:
	cargo fmt --all -- --check

# fuzz/ is a workspace of its own: its lock file must follow the main one, or `make fuzz`
# rewrites it, resolving what the main lock has not pinned for it afresh.
locks:
	cargo tree --locked --manifest-path fuzz/Cargo.toml -e normal > /dev/null

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit:
	cargo test --workspace --locked

check: fmt locks clippy unit

test: deps check

# The API key made on first run is kept in the data directory (0600) and printed each time.
PALISADE_DATA_DIR ?= /var/lib/palisade
# The template `make run` builds before it serves (the API's default template).
PALISADE_TEMPLATE ?= system/debian:bookworm
run: deps
	cargo build --release --locked -p palisade
	@data="$(PALISADE_DATA_DIR)"; keyfile="$$data/cli-api-key"; \
	if [ ! -s "$$keyfile" ]; then \
	  mkdir -p "$$data"; chmod 700 "$$data"; \
	  ( umask 077; ./target/release/palisade keys create --org default --data-dir "$$data" > "$$keyfile.tmp" ); \
	  mv "$$keyfile.tmp" "$$keyfile"; \
	fi; \
	chmod 600 "$$keyfile"; \
	echo "Palisade is starting. In another shell:"; \
	echo "  export LEAP0_BASE_URL=http://127.0.0.1:8080"; \
	echo "  export LEAP0_API_KEY=$$(cat "$$keyfile")"; \
	exec ./target/release/palisade serve --data-dir "$$data" --prepare-template "$(PALISADE_TEMPLATE)"

fuzz:
	./tools/fuzz-smoke

# What `make bench` drives: load generators, profilers and the peers Palisade is compared with.
# Daemons are never started by the install (policy-rc.d); the bench runs its own copies in
# testbed namespaces with its own configs.
BENCH_PACKAGES := iperf3 wrk nghttp2-client dnsperf valgrind linux-perf heaptrack \
	haproxy nginx-light libnginx-mod-stream squid-openssl unbound
BENCH_PY_PACKAGES := mitmproxy==11.0.2
OHA_VERSION := 1.16.0

bench-deps: apt $(STAMP)/bench-deps
$(STAMP)/bench-deps: Makefile tools/find-python
	@missing=(); for p in $(BENCH_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing+=("$$p"); \
	done; \
	if [ $${#missing[@]} -gt 0 ]; then \
	  echo "installing: $${missing[*]}"; \
	  if [ "$$(id -u)" -ne 0 ]; then echo "error: installing packages needs root (run make as root)" >&2; exit 1; fi; \
	  apt-get update -q; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; \
	    trap 'rm -f /usr/sbin/policy-rc.d' EXIT; \
	  fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$${missing[@]}"; \
	fi
	@py=$$(tools/find-python); d=.venv-bench; \
	if [ ! -x "$$d/bin/mitmdump" ]; then \
	  echo "creating $$d with $$py"; rm -rf "$$d"; "$$py" -m venv "$$d"; \
	  "$$d/bin/pip" install -q --disable-pip-version-check $(BENCH_PY_PACKAGES); \
	fi
	@if [ ! -x target/tools/bin/oha ]; then \
	  echo "building oha $(OHA_VERSION) (a latency load generator that corrects for coordinated omission)"; \
	  cargo install --quiet --locked --root target/tools oha@$(OHA_VERSION); \
	fi
	@mkdir -p $(STAMP) && touch $@

bench: bench-deps
	@# Whole-system benchmark (bench/, as root, in testbed namespaces); writes bench/RESULTS.md and bench/results.json.
	@# Both binaries: the suite and the hudsucker peer it starts beside itself.
	cargo build --release --locked -p palisade-bench
	cargo run --release --locked -p palisade-bench --bin palisade-bench

clean:
	cargo clean
	rm -rf .venv-leap0-*
