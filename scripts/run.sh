#!/usr/bin/env bash
# Runs the application on the local stack: the site, WRITERS db-writers (one consumer group,
# 2 by default) and one file-backup, from the release binaries.
#   scripts/run.sh            foreground; logs to the terminal and .stack/logs/; Ctrl-C stops all
#                             (and the stack too, if this run started it)
#   scripts/run.sh --background   detached; returns once GET /readyz answers 200
#   scripts/run.sh --stop         stops every application process it started (however many writers)
# Each consumer serves /metrics and /readyz on a port of its own: file-backup on METRICS_PORT_BASE
# (9100), db-writer-N on METRICS_PORT_BASE + N (9101, 9102, ...); the site on its own port.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
RUN=$ROOT/.stack/run
LOGS=$ROOT/.stack/logs
BIND_ADDR=${BIND_ADDR:-127.0.0.1:8080}
export RUST_LOG=${RUST_LOG:-info}
export BACKUP_CSV=${BACKUP_CSV:-$ROOT/data/bids.csv}
WRITERS=${WRITERS:-2}
METRICS_HOST=${METRICS_HOST:-127.0.0.1}
METRICS_PORT_BASE=${METRICS_PORT_BASE:-9100}
[[ $WRITERS =~ ^[1-9][0-9]*$ ]] || { echo "WRITERS must be a number of 1 or more, not '$WRITERS'" >&2; exit 2; }
APPS=(web)
for i in $(seq 1 "$WRITERS"); do APPS+=("db-writer-$i"); done
APPS+=(file-backup)

metrics_port() {
  case $1 in
    db-writer-*) echo $((METRICS_PORT_BASE + ${1#db-writer-})) ;;
    file-backup) echo "$METRICS_PORT_BASE" ;;
  esac
}

command_of() {
  case $1 in
    web) echo "$BIN/auction-web --bind-addr $BIND_ADDR" ;;
    db-writer-*) echo "$BIN/auction-consumer db-writer --metrics-addr $METRICS_HOST:$(metrics_port "$1")" ;;
    file-backup) echo "$BIN/auction-consumer file-backup --metrics-addr $METRICS_HOST:$(metrics_port "$1")" ;;
  esac
}

metrics_urls() {
  local app
  printf '  %-12s http://%s/metrics\n' web "$BIND_ADDR"
  for app in "${APPS[@]}"; do
    [[ $app == web ]] && continue
    printf '  %-12s http://%s:%s/metrics  (and /readyz)\n' "$app" "$METRICS_HOST" "$(metrics_port "$app")"
  done
}

alive() { [[ -f $RUN/app-$1.pid ]] && kill -0 "$(cat "$RUN/app-$1.pid")" 2>/dev/null; }

# Every app with a pid file, so a stop also finds writers started with a larger WRITERS.
started_apps() {
  local f
  for f in "$RUN"/app-*.pid; do [[ -e $f ]] && { f=${f##*/app-}; echo "${f%.pid}"; }; done
  return 0
}

stop_apps() {
  local app pid
  local apps
  mapfile -t apps < <(started_apps)
  for app in "${apps[@]}"; do
    alive "$app" || { rm -f "$RUN/app-$app.pid"; continue; }
    pid=$(cat "$RUN/app-$app.pid")
    kill -TERM "$pid" 2>/dev/null || true
  done
  for app in "${apps[@]}"; do
    [[ -f $RUN/app-$app.pid ]] || continue
    pid=$(cat "$RUN/app-$app.pid")
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$RUN/app-$app.pid"
    printf '%-12s stopped\n' "$app"
  done
}

wait_ready() {
  local url="http://$BIND_ADDR/readyz"
  for _ in $(seq 1 120); do
    if curl -fsS -o /dev/null --max-time 5 "$url"; then
      echo "ready: http://$BIND_ADDR/"
      return 0
    fi
    for app in "${APPS[@]}"; do
      alive "$app" || { echo "$app exited; its log: $LOGS/$app.log" >&2; tail -n 20 "$LOGS/$app.log" >&2; return 1; }
    done
    sleep 0.5
  done
  echo "not ready after 60 s: $(curl -sS --max-time 5 "$url" || true)" >&2
  return 1
}

start_apps() {
  mkdir -p "$RUN" "$LOGS" "$(dirname "$BACKUP_CSV")"
  local app
  for app in "${APPS[@]}"; do
    if alive "$app"; then printf '%-12s already running\n' "$app"; continue; fi
    # shellcheck disable=SC2046 # the command line is split on purpose
    setsid $(command_of "$app") >>"$LOGS/$app.log" 2>&1 < /dev/null &
    echo $! > "$RUN/app-$app.pid"
    printf '%-12s started (log %s)\n' "$app" "$LOGS/$app.log"
  done
}

case ${1:-} in
  --stop) stop_apps ;;
  --background) start_apps; wait_ready; echo "dashboard: http://$BIND_ADDR/dashboard"; echo "metrics:"; metrics_urls ;;
  "")
    stack_was_up=yes
    bash "$ROOT/scripts/stack.sh" status >/dev/null 2>&1 || stack_was_up=no
    bash "$ROOT/scripts/stack.sh" up
    "$BIN/auction-consumer" migrate
    start_apps
    cleanup() {
      trap - INT TERM EXIT
      echo; stop_apps
      [[ $stack_was_up == yes ]] || bash "$ROOT/scripts/stack.sh" down
      kill $(jobs -p) 2>/dev/null || true
    }
    trap cleanup INT TERM EXIT
    wait_ready
    cat <<MSG

  Site:       http://$BIND_ADDR/
  Dashboard:  http://$BIND_ADDR/dashboard
  Report:     make report (a static HTML page from the analysts' views)
  MySQL:      127.0.0.1:3306, database auction, user analyst / password analyst (read-only)
  CSV backup: $BACKUP_CSV
  Logs:       $LOGS/
  Metrics:
$(metrics_urls)

  Ctrl-C stops everything.
MSG
    logs=()
    for app in "${APPS[@]}"; do logs+=("$LOGS/$app.log"); done
    tail -n 0 -F "${logs[@]}" &
    wait
    ;;
  *) echo "usage: $0 [--background|--stop]" >&2; exit 2 ;;
esac
