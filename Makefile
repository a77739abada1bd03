# gatehouse: `make run` builds and runs the example config; `make test` runs every test.
SHELL := /bin/bash
CONFIG ?= conf/gatehouse.yaml

.PHONY: run test deps test-deps build release lint bench fmt fuzz

# cmake: zlib-ng (Pingora); perl + make + a C compiler: the vendored OpenSSL (Pingora's
# `openssl` feature builds it from source and links it statically, no libssl-dev needed).
deps:
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	perl -MFindBin -MIPC::Cmd -MFile::Compare -e1 2>/dev/null || missing="$$missing perl"; \
	command -v make >/dev/null || missing="$$missing make"; \
	command -v cc >/dev/null || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then (apt-get update -qq || true) && apt-get install -y -qq $$missing; fi

# redis-server: the `store: redis` tests and benches start their own on a free port.
# websockets (Python): the burst tests' WebSocket client and echo server.
# curl: the tutorial test runs the commands of docs/tutorial.md, which use it.
# chromium: tests/status.rs renders the admin status page in headless Chromium.
test-deps: deps
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then (apt-get update -qq || true) && apt-get install -y -qq $$missing; fi
	@python3 -c 'import websockets.sync.server' 2>/dev/null || python3 -m pip install --quiet 'websockets>=13'

build: deps
	cargo build --release

run: build
	./target/release/gatehouse -c $(CONFIG)

test: test-deps
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo test --all-targets --no-fail-fast

bench: build test-deps
	cargo bench
	benches/compare.sh

# Fuzzing (not part of CI): each target runs for FUZZ_SECONDS. Needs cargo-fuzz; the stable
# toolchain is used with RUSTC_BOOTSTRAP for the sanitizer flags.
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for t in $$(cargo fuzz list); do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
