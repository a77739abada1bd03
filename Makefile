# gatehouse: `make run` builds and runs the example config; `make test` runs every test.
SHELL := /bin/bash
CONFIG ?= conf/gatehouse.yaml

.PHONY: run test deps test-deps build release lint bench fmt

deps:
	@command -v cmake >/dev/null || { (apt-get update -qq || true) && apt-get install -y -qq cmake; }

test-deps: deps

build: deps
	cargo build --release

run: build
	./target/release/gatehouse -c $(CONFIG)

test: test-deps
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo test --all-targets

bench: build
	cargo bench
	benches/compare.sh
