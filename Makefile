# pg_sync + sqlite_sync. Everything installs its own prerequisites.
#   make test     prerequisites, unit tests, cargo pgrx test, integration tests
#   make demo     two offline SQLite devices syncing with a throwaway Postgres
#   make install  build and install pg_sync into the local Postgres 15
#   make bench    benchmarks; writes docs/benchmarks.md
SHELL := /bin/bash
PG_CONFIG ?= /usr/bin/pg_config
PGRX_VERSION := 0.18.1
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all deps build install test unit pgrx-test integration test-node demo bench lint clean-clusters fuzz

all: build

deps:
	@bash scripts/deps.sh

build: deps
	cargo build --workspace
	cargo build --manifest-path sqlite_sync/Cargo.toml --release

# Installs pg_sync into the Postgres that $(PG_CONFIG) belongs to (release build).
EXTDIR = $(shell $(PG_CONFIG) --sharedir)/extension

install: deps
	cd pg_sync && cargo pgrx install --release --pg-config $(PG_CONFIG)
	install -m 644 sql/pg_sync--0.1.0.sql $(EXTDIR)/
	cargo build --manifest-path sqlite_sync/Cargo.toml --release
	@echo "sqlite_sync: $(CURDIR)/target/release/libsqlite_sync.so"

unit:
	cargo test -p sync_core
	cargo test --manifest-path sqlite_sync/Cargo.toml

pgrx-test:
	@bash scripts/pgrx-test.sh

integration:
	cargo build --manifest-path sqlite_sync/Cargo.toml
	cd pg_sync && cargo pgrx install --pg-config $(PG_CONFIG)
	install -m 644 sql/pg_sync--0.1.0.sql $(EXTDIR)/
	cargo test -p sync_tests -- --test-threads=2

test: deps
	$(MAKE) unit
	$(MAKE) pgrx-test
	$(MAKE) integration

# The extension from Node's better-sqlite3 (fetched from the npm registry and
# built on first use, about 2 minutes). Not part of `make test`, which needs
# no network beyond apt and crates.io.
test-node:
	cargo build --manifest-path sqlite_sync/Cargo.toml
	SQLITE_SYNC_LIB=$(CURDIR)/target/debug/libsqlite_sync.so bash tests/node/run.sh

lint:
	cargo fmt --all -- --check
	cargo fmt --all --manifest-path sqlite_sync/Cargo.toml -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --manifest-path sqlite_sync/Cargo.toml --all-targets -- -D warnings

demo: deps
	@bash scripts/demo.sh

bench: deps
	@bash scripts/bench.sh

# Fuzzes sync_core's decoders and merge rules (cargo-fuzz on the nightly
# toolchain; installs cargo-fuzz on first use): every target in fuzz/ for
# 1,000,000 runs, one after another. See docs/fuzzing.md.
fuzz:
	@bash scripts/fuzz.sh
