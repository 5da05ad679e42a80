#!/usr/bin/env bash
# `make chaos`: the delivery promise under faults, on a real stack of its own.
#
# Starts a second stack (.stack-chaos/, ports 13306, 19092, 18081: nothing of `make run` or of the
# tests is touched), the site on 127.0.0.1:18080, two db-writers and a file-backup, from the
# release binaries. Bidders post for CHAOS_SECONDS (default 150) while this script:
#   SIGKILLs and restarts a db-writer, then the file-backup;
#   adds a third db-writer and removes it (two rebalances);
#   restarts MariaDB, then the broker, then the registry (SIGKILL, then start);
#   SIGKILLs a db-writer and the file-backup together and restarts them.
# Then it waits for the consumers to catch up and prints one line:
#   acked N, in MySQL N (duplicates 0), in CSV N (duplicates 0), 5xx answers K
# followed by `auction-consumer audit` over the same run; exits non-zero if anything acked is
# missing or doubled. Bounded in time (about 5 minutes); everything it started is stopped at the
# end, and .stack-chaos/ is removed unless CHAOS_KEEP=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
EXAMPLES=${EXAMPLES:-$ROOT/target/release/examples}
SECONDS_OF_LOAD=${CHAOS_SECONDS:-150}
CLIENTS=${CHAOS_CLIENTS:-8}

export STACK_DIR=$ROOT/.stack-chaos
export MARIADB_PORT=13306 KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 APICURIO_PORT=18081 APICURIO_MGMT_PORT=19000
export KAFKA_SASL_SSL_PORT=19094 REGISTRY_TLS_PORT=18444
LOGS=$STACK_DIR/logs
APPS=$STACK_DIR/apps
mkdir -p "$APPS" "$LOGS"

export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export SCHEMA_REGISTRY_URL=http://127.0.0.1:$APICURIO_PORT/apis/ccompat/v7
export DATABASE_URL=mysql://auction:auction@127.0.0.1:$MARIADB_PORT/auction
export ADMIN_DATABASE_URL=mysql://auction_admin:auction_admin@127.0.0.1:$MARIADB_PORT/auction
export BACKUP_CSV=$STACK_DIR/bids.csv
export BIND_ADDR=127.0.0.1:18080
export RUST_LOG=${RUST_LOG:-info}
# Faults are expected here: bids may wait for the broker a little longer than on a quiet day.
export KAFKA_DELIVERY_TIMEOUT_MS=${KAFKA_DELIVERY_TIMEOUT_MS:-8000}

say() { printf '%s chaos: %s\n' "$(date -u +%T)" "$*"; }

start_app() { # name, then the command
  local name=$1; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$APPS/$name.pid"
  disown $!  # killing it on purpose is the point: no "Killed" notices from the shell
}
app_pid() { cat "$APPS/$1.pid" 2>/dev/null || true; }
kill_app() { # name signal
  local pid; pid=$(app_pid "$1")
  [[ -n $pid ]] && kill "-$2" "$pid" 2>/dev/null || true
  [[ $2 == KILL ]] || { for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; }
  rm -f "$APPS/$1.pid"
}
start_writer() { start_app "db-writer-$1" "$BIN/auction-consumer" db-writer; }
start_backup() { start_app file-backup "$BIN/auction-consumer" file-backup; }
service_pid() { cat "$STACK_DIR/run/$1.pid" 2>/dev/null || true; }
restart_service() { # mariadb | kafka | apicurio
  say "SIGKILL $1"
  kill -KILL "$(service_pid "$1")" 2>/dev/null || true
  sleep 2
  bash "$ROOT/scripts/stack.sh" up >>"$LOGS/chaos-stack.log" 2>&1
  say "$1 back"
}

cleanup() {
  trap - EXIT INT TERM
  local f
  for f in "$APPS"/*.pid; do [[ -e $f ]] && kill -TERM "$(cat "$f")" 2>/dev/null || true; done
  # SIGTERM: every process finishes what it holds within 10 s; only a straggler is killed.
  for f in "$APPS"/*.pid; do
    [[ -e $f ]] || continue
    for _ in $(seq 1 120); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$(cat "$f")" 2>/dev/null && say "$(basename "$f" .pid) did not stop within 12 s of SIGTERM" || true
  done
  bash "$ROOT/scripts/stack.sh" down >>"$LOGS/chaos-stack.log" 2>&1 || true
  if [[ ${CHAOS_KEEP:-0} != 1 ]]; then rm -rf "$STACK_DIR"; else say "kept $STACK_DIR (logs in $LOGS)"; fi
}
trap cleanup EXIT INT TERM

say "starting a stack of its own under $STACK_DIR"
bash "$ROOT/scripts/stack.sh" up | sed 's/^/  /'
"$BIN/auction-consumer" migrate >>"$LOGS/migrate.log" 2>&1
# One auction per bidder, open for a day, no anti-sniping: every rising bid is acceptable.
mariadb --defaults-file="$STACK_DIR/mariadb/my.cnf" auction -e "
  INSERT INTO auction (id, title, starting_price, min_increment, ends_at, extend_seconds)
  SELECT 1000 + seq, CONCAT('Chaos ', seq), 1, 1, UTC_TIMESTAMP(6) + INTERVAL 1 DAY, 0 FROM seq_1_to_$CLIENTS;"
START=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)

start_app web "$BIN/auction-web"
start_writer 1
start_writer 2
start_backup
for _ in $(seq 1 120); do curl -fsS -o /dev/null "http://$BIND_ADDR/readyz" && break; sleep 0.5; done
say "site ready; $CLIENTS bidders for ${SECONDS_OF_LOAD}s"

"$EXAMPLES/chaos_load" --url="http://$BIND_ADDR" --clients="$CLIENTS" --first-auction=1001 \
  --seconds="$SECONDS_OF_LOAD" --csv="$BACKUP_CSV" \
  --database-url="mysql://analyst:analyst@127.0.0.1:$MARIADB_PORT/auction" >"$LOGS/chaos-result.txt" 2>"$LOGS/chaos-load.log" &
LOAD=$!

sleep 8;  say "SIGKILL db-writer-1";           kill_app db-writer-1 KILL; sleep 2; start_writer 1
sleep 6;  say "SIGKILL file-backup";           kill_app file-backup KILL; sleep 2; start_backup
sleep 6;  say "add db-writer-3 (rebalance)";   start_writer 3
sleep 10; say "remove db-writer-3 (rebalance, SIGTERM)"; t0=$(date +%s%N); kill_app db-writer-3 TERM
say "db-writer-3 stopped $((($(date +%s%N) - t0) / 1000000)) ms after SIGTERM"
sleep 5;  restart_service mariadb
sleep 10; restart_service kafka
sleep 10; restart_service apicurio
sleep 5;  say "SIGKILL db-writer-2 and file-backup"; kill_app db-writer-2 KILL; kill_app file-backup KILL
sleep 2;  start_writer 2; start_backup
say "faults done; waiting for the bidders and the consumers"

status=0
wait $LOAD || status=$?
cat "$LOGS/chaos-result.txt"
say "audit of the run (Kafka against MySQL and the CSV, bids since $START):"
"$BIN/auction-consumer" audit --since "$START" --settle-secs 60 | sed 's/^/  /' || status=1
if ((status != 0)); then say "FAILED; logs in $LOGS (run with CHAOS_KEEP=1 to keep them)"; fi
exit $status
