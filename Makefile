# The two commands a newcomer needs are `make run` and `make test`; see README.md.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test up down stack-up stack-down secure-env status build release migrate bench chaos check-toolchain

## run: build, start the stack, the site on http://127.0.0.1:8080, 2 db-writers and a file-backup (Ctrl-C stops all)
run: release
	@bash scripts/run.sh

## test: the whole test suite over the real stack (starts the stack if it is not up)
test: check-toolchain stack-up
	$(CARGO) test --workspace --locked -- --test-threads=$${TEST_THREADS:-4}

## up: everything in the background; returns once GET /readyz is 200
up: release stack-up migrate
	@bash scripts/run.sh --background

## down: stop the application and the stack
down:
	@bash scripts/run.sh --stop
	@bash scripts/stack.sh down

stack-up:
	@bash scripts/stack.sh up

stack-down:
	@bash scripts/stack.sh down

## secure-env: NAME=value lines pointing the programs at the stack's SASL_SSL Kafka and https registry with basic auth
secure-env:
	@bash scripts/stack.sh secure-env

status:
	@bash scripts/stack.sh status || true

migrate: release stack-up
	@target/release/auction-consumer migrate

release: check-toolchain
	$(CARGO) build --release --locked -p auction-web -p auction-consumers

## bench: load the running system (make up) and print bids/s at the API and end to end
bench: up
	$(CARGO) run --release --locked -p auction-tests --example pipeline_bench -- $(BENCH_ARGS)

## chaos: bids under SIGKILLs, rebalances and MariaDB/broker/registry restarts on a stack of its own; then the audit
chaos: release
	$(CARGO) build --release --locked -p auction-tests --example chaos_load
	@bash scripts/chaos.sh

check-toolchain:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust 1.89 or newer with rustup (https://rustup.rs)"; exit 1; }
	@bash scripts/install-deps.sh
