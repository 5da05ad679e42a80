# The two commands a newcomer needs are `make run` and `make test`; see README.md.
SHELL := /bin/bash
CARGO ?= cargo
# db-writer replicas `make run` and `make up` start (one consumer group; more than the topic's
# partitions sit idle): `make up WRITERS=4`.
WRITERS ?= 2

.PHONY: run test up down stack-up stack-down secure-env status build release migrate bench bench-live chaos check-toolchain report bench-views

## run: build, start the stack, the site on http://127.0.0.1:8080, WRITERS (2) db-writers and a file-backup (Ctrl-C stops all)
run: release
	@WRITERS=$(WRITERS) bash scripts/run.sh

## test: the whole test suite over the real stack (starts the stack if it is not up)
test: check-toolchain stack-up
	$(CARGO) test --workspace --locked -- --test-threads=$${TEST_THREADS:-4}

## up: everything in the background (WRITERS db-writers); returns once GET /readyz is 200
up: release stack-up migrate
	@WRITERS=$(WRITERS) bash scripts/run.sh --background

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

## bench-live: on the running system (make up): time from each bid's 202 to its line on /dashboard in Chromium (50 bids), then what 200 open dashboards cost the web process
bench-live: up
	cd tests/browser && BASE_URL=http://127.0.0.1:8080 MODE=latency COUNT=$${COUNT:-50} SCREENSHOT_DIR=../../target/browser node e2e.mjs
	cd tests/browser && BASE_URL=http://127.0.0.1:8080 WEB_PID=$$(cat ../../.stack/run/app-web.pid) COUNT=200 node idle.mjs

## chaos: bids under SIGKILLs, rebalances and MariaDB/broker/registry restarts on a stack of its own; then the audit
chaos: release
	$(CARGO) build --release --locked -p auction-tests --example chaos_load
	@bash scripts/chaos.sh

## report: a static HTML report with charts from the analysts' views (read-only analyst user); prints its path
report: release
	@target/release/auction-consumer report --out target/report/auction-report.html

## bench-views: fill a private database with 1,000,000 bids through the db-writer and time every analyst view
bench-views: check-toolchain stack-up
	$(CARGO) run --release --locked -p auction-tests --example views_bench -- $(VIEWS_BENCH_ARGS)

check-toolchain:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust 1.89 or newer with rustup (https://rustup.rs)"; exit 1; }
	@bash scripts/install-deps.sh
