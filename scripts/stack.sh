#!/usr/bin/env bash
# Local service stack for development and tests, private to this clone (all state under .stack/) and
# bound to loopback only:
#   MariaDB              127.0.0.1:3306   (our own mariadbd, not the Debian service)
#   Kafka (KRaft, 1 node) 127.0.0.1:9092  (controller 127.0.0.1:9093)
#   Apicurio Registry    127.0.0.1:8081   (Confluent API under /apis/ccompat/v7; schemas stored in Kafka)
# and the same services as a managed cluster shows them (`make -s secure-env` prints the settings):
#   Kafka SASL_SSL       127.0.0.1:9094   (SCRAM-SHA-512, user KAFKA_SCRAM_USER; certificate of our own CA)
#   registry over https  127.0.0.1:8444   (nginx in front of Apicurio: TLS and basic auth, user REGISTRY_USER)
# The CA and the server certificate (for 127.0.0.1 and localhost) are made once with openssl, in .stack/tls/;
# MariaDB offers TLS with it too (DATABASE_URL ...?ssl-mode=VERIFY_IDENTITY, DATABASE_SSL_CA=.stack/tls/ca.crt).
# Usage: scripts/stack.sh up|down|status|secure-env
#
# A second, independent stack (as `make chaos` uses, so its restarts touch nothing else) runs with
# STACK_DIR (its state) and the ports overridden: MARIADB_PORT, KAFKA_PORT, KAFKA_CONTROLLER_PORT,
# KAFKA_SASL_SSL_PORT, APICURIO_PORT, APICURIO_MGMT_PORT, REGISTRY_TLS_PORT. The programs it runs
# (Kafka jars, Apicurio, the Java runtime) are always those install-deps.sh put under .stack/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The versions are pinned once, in install-deps.sh (which fetches them); read from there, never repeated.
KAFKA_VERSION=$(sed -n 's/^KAFKA_VERSION=//p' "$ROOT/scripts/install-deps.sh")
APICURIO_VERSION=$(sed -n 's/^APICURIO_VERSION=//p' "$ROOT/scripts/install-deps.sh")

MARIADB_PORT=${MARIADB_PORT:-3306}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
APICURIO_PORT=${APICURIO_PORT:-8081}
# Apicurio's Quarkus management interface (health, metrics) is enabled at build time and cannot be
# switched off, so it gets a port too; also on loopback.
APICURIO_MGMT_PORT=${APICURIO_MGMT_PORT:-9000}
KAFKA_SASL_SSL_PORT=${KAFKA_SASL_SSL_PORT:-9094}
REGISTRY_TLS_PORT=${REGISTRY_TLS_PORT:-8444}

AUCTION_DB_PASSWORD=${AUCTION_DB_PASSWORD:-auction}
ANALYST_DB_PASSWORD=${ANALYST_DB_PASSWORD:-analyst}
ADMIN_DB_PASSWORD=${ADMIN_DB_PASSWORD:-auction_admin}
# Credentials of the secure endpoints: development defaults, like the database passwords above.
# (Letters, digits, - and _ only: they go into Kafka's SCRAM syntax and an htpasswd line.)
KAFKA_SCRAM_USER=${KAFKA_SCRAM_USER:-auction}
KAFKA_SCRAM_PASSWORD=${KAFKA_SCRAM_PASSWORD:-auction-kafka-secret}
REGISTRY_USER=${REGISTRY_USER:-auction}
REGISTRY_PASSWORD=${REGISTRY_PASSWORD:-auction-registry-secret}

# Where install-deps.sh put the programs, and where this stack keeps its state.
INSTALL=$ROOT/.stack
STACK=${STACK_DIR:-$INSTALL}
RUN=$STACK/run
LOGS=$STACK/logs
MY_CNF=$STACK/mariadb/my.cnf
MY_SOCK=$RUN/mariadb.sock
KAFKA_LIBS=$INSTALL/kafka/libs
APICURIO_JAR=$INSTALL/apicurio/quarkus-run.jar
# Apicurio's working directory: Quarkus reads config/application.properties from it.
APICURIO_HOME=$STACK/apicurio
TLS=$STACK/tls
NGINX_HOME=$STACK/nginx
SERVICES=(mariadb kafka apicurio nginx)

say() { printf '%-9s %s\n' "$1" "$2"; }

# --- processes -----------------------------------------------------------------------------------

# A process is ours when its command line names this clone's .stack/ (guards against pid reuse and
# against a stranger that happens to hold our port).
names_our_stack() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF "$STACK/"; }
# nginx's workers hold its port too but show only "nginx: worker process": theirs is the parent's.
is_ours() {
  names_our_stack "$1" && return 0
  local parent
  parent=$(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ')
  [[ -n $parent && $parent -gt 1 ]] && names_our_stack "$parent"
}

port_pids() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u; }

port_listening() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

service_port() {
  case $1 in mariadb) echo $MARIADB_PORT ;; kafka) echo $KAFKA_PORT ;; apicurio) echo $APICURIO_PORT ;; nginx) echo $REGISTRY_TLS_PORT ;; esac
}

# Prints the pid of our running instance of a service, or nothing. Falls back to the port's holder
# so a lost pid file does not make us start a second copy.
service_pid() {
  local pid
  pid=$(cat "$RUN/$1.pid" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && is_ours "$pid"; then echo "$pid"; return; fi
  for pid in $(port_pids "$(service_port "$1")"); do
    if is_ours "$pid"; then echo "$pid" >"$RUN/$1.pid" 2>/dev/null || true; echo "$pid"; return; fi
  done
}

# Refuses to go on when one of our ports is held by a process that is not ours: we must never send
# test data to, or take orders from, a stranger (the Debian mariadb service included).
check_ports() {
  local port pid bad=0
  for port in $MARIADB_PORT $KAFKA_PORT $KAFKA_CONTROLLER_PORT $KAFKA_SASL_SSL_PORT $APICURIO_PORT $APICURIO_MGMT_PORT $REGISTRY_TLS_PORT; do
    port_listening "$port" || continue
    local pids
    pids=$(port_pids "$port")
    [[ -n $pids ]] || { bad=1; say "port" "$port is in use by a process we cannot see:"; ss -ltnp "sport = :$port"; continue; }
    for pid in $pids; do
      is_ours "$pid" && continue
      bad=1
      local cmd
      cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-100 || true)
      say "port" "$port is held by a process that is not ours (pid $pid: $cmd):"
      ss -ltnp "sport = :$port"
    done
  done
  ((bad == 0)) || { echo "stack: free these ports (or stop that service) and retry" >&2; exit 1; }
}

# Starts a command detached from this shell (own session, immune to hangups), with its pid in
# $RUN/NAME.pid and its output appended to $LOGS/NAME.log. The bash wrapper writes its own pid and
# then execs, so the pid file holds the server's real pid.
start_bg() {
  local name=$1 dir=$2
  shift 2
  local logf=$LOGS/$name.log
  # Cheap rotation: keep one previous log when the current one grows past 50 MB.
  if [[ -f $logf ]] && (($(stat -c %s "$logf") > 50 * 1024 * 1024)); then mv -f "$logf" "$logf.1"; fi
  printf '\n===== %s: starting %s =====\n' "$(date -u +%FT%TZ)" "$name" >>"$logf"
  rm -f "$RUN/$name.pid"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner bash
  # The redirections cover the whole subshell and it execs: nothing left running holds the
  # caller's stdout, so `make stack-up | tail` (or a CI log pipe) ends when the script does.
  (cd "$dir" && exec setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$@") >>"$logf" 2>&1 </dev/null &
  # Wait for the pid file so that wait_ready can tell "still starting" from "died".
  local i
  for ((i = 0; i < 50; i++)); do [[ -s $RUN/$name.pid ]] && return; sleep 0.1; done
  fail "$name" "did not start"
}

fail() {
  local name=$1 why=$2
  say "$name" "FAILED: $why; log: $LOGS/$name.log (last lines below)"
  tail -n 25 "$LOGS/$name.log" 2>/dev/null | sed 's/^/  | /'
  exit 1
}

# Polls CHECK (a function) once a second until it succeeds; fails when the server died or TIMEOUT passed.
wait_ready() {
  local name=$1 timeout=$2 check=$3 start=$SECONDS
  until "$check"; do
    [[ -n $(service_pid "$name") ]] || fail "$name" "process exited during startup"
    ((SECONDS - start < timeout)) || fail "$name" "not ready after ${timeout}s"
    sleep 1
  done
}

stop_service() {
  local name=$1 timeout=$2 pid
  pid=$(service_pid "$name")
  if [[ -z $pid ]]; then say "$name" "not running"; rm -f "$RUN/$name.pid"; return; fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < timeout * 5; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5 # let the kernel release its ports
    say "$name" "stopped (killed after ${timeout}s without exiting on SIGTERM)"
  else
    say "$name" "stopped"
  fi
  rm -f "$RUN/$name.pid"
}

# --- MariaDB ---------------------------------------------------------------------------------------

write_my_cnf() {
  mkdir -p "$STACK/mariadb/data" "$STACK/mariadb/tmp"
  # --defaults-file (always the first option) keeps /etc/mysql/* out: that config is the system
  # service's, with its own datadir, socket and port.
  cat >"$MY_CNF" <<EOF
[client]
socket = $MY_SOCK
user = $(id -un)
default-character-set = utf8mb4

[mysqld]
user = $(id -un)
datadir = $STACK/mariadb/data
tmpdir = $STACK/mariadb/tmp
socket = $MY_SOCK
pid-file = $RUN/mariadb.pid
log-error = $LOGS/mariadb.log
bind-address = 127.0.0.1
port = $MARIADB_PORT
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
default-time-zone = '+00:00'
innodb_buffer_pool_size = 256M
max_connections = 500
# TLS offered (not required), with the certificate Kafka and nginx use: a client can connect
# with ssl-mode=VERIFY_IDENTITY as to a managed MySQL.
ssl_cert = $TLS/server.crt
ssl_key = $TLS/server.key
ssl_ca = $TLS/ca.crt
EOF
}

mariadb_init_once() {
  [[ -d $STACK/mariadb/data/mysql ]] && return 0
  say mariadb "initialising $STACK/mariadb/data"
  # root (the OS user running this) logs in through the socket only: no password to keep anywhere.
  mariadb-install-db --defaults-file="$MY_CNF" --skip-test-db \
    --auth-root-authentication-method=socket >>"$LOGS/mariadb.log" 2>&1 ||
    fail mariadb "mariadb-install-db failed"
}

mariadb_ready() { mariadb-admin --defaults-file="$MY_CNF" --connect-timeout=2 status >/dev/null 2>&1; }

sql_str() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\\\'}"; }

# Users and grants, applied at every up: CREATE ... IF NOT EXISTS for a first run, then password and a
# REVOKE + GRANT so a changed password or grant set takes effect on an existing datadir too.
mariadb_users_sql() {
  echo "CREATE DATABASE IF NOT EXISTS auction CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
  local user pw host
  for user in auction analyst auction_admin; do
    case $user in
      auction) pw=$AUCTION_DB_PASSWORD ;;
      analyst) pw=$ANALYST_DB_PASSWORD ;;
      auction_admin) pw=$ADMIN_DB_PASSWORD ;;
    esac
    # 127.0.0.1 for TCP clients, localhost for clients on the socket.
    for host in 127.0.0.1 localhost; do
      local who="'$user'@'$host'"
      echo "CREATE USER IF NOT EXISTS $who IDENTIFIED BY $(sql_str "$pw");"
      echo "ALTER USER $who IDENTIFIED BY $(sql_str "$pw");"
      echo "REVOKE ALL PRIVILEGES, GRANT OPTION FROM $who;"
      case $user in
        auction)
          # UPDATE for the standings the db-writer keeps (auction_standing); nothing is ever deleted.
          echo "GRANT SELECT, INSERT, UPDATE ON auction.* TO $who;"
          # The same rights on the tests' own databases, so tests run the programs as this user.
          echo "GRANT SELECT, INSERT, UPDATE ON \`auction\\_test\\_%\`.* TO $who;"
          ;;
        analyst)
          echo "GRANT SELECT ON auction.* TO $who;"
          # Read-only on the tests' databases too, so the report is tested as the user that runs it.
          echo "GRANT SELECT ON \`auction\\_test\\_%\`.* TO $who;"
          ;;
        auction_admin)
          echo "GRANT ALL PRIVILEGES ON auction.* TO $who;"
          # Tests create and drop their own databases named auction_test_<something>.
          echo "GRANT ALL PRIVILEGES ON \`auction\\_test\\_%\`.* TO $who;"
          ;;
      esac
    done
  done
}

mariadb_up() {
  write_my_cnf
  if [[ -n $(service_pid mariadb) ]]; then MARIADB_WAS_UP=1; return; fi
  MARIADB_WAS_UP=0
  mariadb_init_once
  start_bg mariadb "$STACK" "$(command -v mariadbd || echo /usr/sbin/mariadbd)" --defaults-file="$MY_CNF"
}

mariadb_finish() {
  wait_ready mariadb 60 mariadb_ready
  mariadb_users_sql | mariadb --defaults-file="$MY_CNF" >>"$LOGS/mariadb.log" 2>&1 ||
    fail mariadb "creating the database and users failed"
}

# --- TLS ------------------------------------------------------------------------------------------

# A CA of this stack's own and one server certificate it signs (for 127.0.0.1 and localhost), used by
# Kafka's SASL_SSL listener (as PKCS#12, its password generated alongside) and by nginx. Made once;
# delete .stack/tls/ (and restart) to make new ones.
tls_once() {
  [[ -s $TLS/server.p12 && -s $TLS/ca.crt ]] && return 0
  say tls "making a CA and a server certificate in $TLS"
  mkdir -p "$TLS"
  (
    cd "$TLS"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=auction local stack CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -extfile server.ext -out server.crt
    openssl rand -hex 16 >keystore.password
    openssl pkcs12 -export -in server.crt -inkey server.key -certfile ca.crt -name broker -out server.p12 \
      -passout file:keystore.password
    chmod 644 ca.crt
  ) >>"$LOGS/tls.log" 2>&1 || fail tls "openssl failed"
}

# --- Kafka ----------------------------------------------------------------------------------------

kafka_java() { java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$STACK/kafka/tools-log4j2.properties" "$@"; }

write_kafka_config() {
  mkdir -p "$STACK/kafka/data"
  cat >"$STACK/kafka/server.properties" <<EOF
# Written by scripts/stack.sh at every up: edit the script, not this file.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
# The listener a managed cluster would offer: TLS with our CA's certificate and SCRAM-SHA-512 users
# (set after start with kafka-configs: kafka_scram_user). No authorizer: any user may do anything.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$TLS/keystore.password")
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
log.dirs=$STACK/kafka/data
num.partitions=6
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# One broker: every internal topic has a single replica.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
  # The broker logs to stdout, which start_bg appends to .stack/logs/kafka.log.
  cat >"$STACK/kafka/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  # Command-line tools (topic listing, console producer...) only report warnings and errors.
  cat >"$STACK/kafka/tools-log4j2.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = err
EOF
}

# Formats the KRaft storage once, with a cluster id generated once and kept in .stack/kafka/cluster.id.
kafka_format_once() {
  [[ -f $STACK/kafka/data/meta.properties ]] && return 0
  local id_file=$STACK/kafka/cluster.id
  [[ -s $id_file ]] || kafka_java kafka.tools.StorageTool random-uuid >"$id_file"
  say kafka "formatting $STACK/kafka/data (cluster id $(cat "$id_file"))"
  kafka_java kafka.tools.StorageTool format --standalone --config "$STACK/kafka/server.properties" \
    --cluster-id "$(cat "$id_file")" >>"$LOGS/kafka.log" 2>&1 || fail kafka "storage format failed"
}

kafka_up() {
  write_kafka_config
  if [[ -n $(service_pid kafka) ]]; then KAFKA_WAS_UP=1; return; fi
  KAFKA_WAS_UP=0
  kafka_format_once
  start_bg kafka "$STACK" java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$STACK/kafka/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$STACK/kafka/server.properties"
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
kafka_port_open() { tcp_open $KAFKA_PORT; }
# A real metadata round trip: the port opens a little before the broker can serve requests.
kafka_answers() { timeout 60 java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$STACK/kafka/tools-log4j2.properties" \
  org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:$KAFKA_PORT --list >/dev/null 2>>"$LOGS/kafka.log"; }

kafka_finish() {
  wait_ready kafka 90 kafka_port_open
  ((KAFKA_WAS_UP)) || wait_ready kafka 60 kafka_answers
  if ! port_listening "$KAFKA_SASL_SSL_PORT"; then
    say kafka "WARNING: running without the SASL_SSL listener on 127.0.0.1:$KAFKA_SASL_SSL_PORT (started by an older stack.sh): restart the stack to add it"
    return
  fi
  kafka_scram_user
}

# The SCRAM user of the SASL_SSL listener, set through the plaintext listener (the local admin
# door). Kafka keeps it in its metadata, so it is set again only when the broker was (re)started or
# the user or password changed (a JVM start costs seconds).
kafka_scram_user() {
  local marker=$STACK/kafka/scram.applied want
  want=$(printf '%s %s' "$KAFKA_SCRAM_USER" "$KAFKA_SCRAM_PASSWORD" | sha256sum | cut -c1-64)
  if ((KAFKA_WAS_UP)) && [[ $(cat "$marker" 2>/dev/null) == "$want" ]]; then return 0; fi
  kafka_java kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter --entity-type users \
    --entity-name "$KAFKA_SCRAM_USER" --add-config "SCRAM-SHA-512=[iterations=8192,password=$KAFKA_SCRAM_PASSWORD]" \
    >>"$LOGS/kafka.log" 2>&1 || fail kafka "creating the SCRAM user $KAFKA_SCRAM_USER failed"
  echo "$want" >"$marker"
}

# --- Apicurio Registry ----------------------------------------------------------------------------

write_apicurio_config() {
  mkdir -p "$APICURIO_HOME/config" "$APICURIO_HOME/tmp"
  # Quarkus reads config/application.properties from its working directory (APICURIO_HOME).
  cat >"$APICURIO_HOME/config/application.properties" <<EOF
# Written by scripts/stack.sh at every up: edit the script, not this file.
quarkus.http.host=127.0.0.1
quarkus.http.port=$APICURIO_PORT
quarkus.management.host=127.0.0.1
quarkus.management.port=$APICURIO_MGMT_PORT
# Durable storage: the journal lives in our Kafka and is replayed into memory at startup.
apicurio.storage.kind=kafkasql
apicurio.kafkasql.bootstrap.servers=127.0.0.1:$KAFKA_PORT
apicurio.kafkasql.topic=kafkasql-journal
apicurio.kafkasql.snapshots.topic=kafkasql-snapshots
# The broker does not auto-create topics, so Apicurio creates its own through the admin API
# (retention.ms=-1 is its default for them). One partition each rather than the broker's 6.
apicurio.kafkasql.topic.auto-create=true
apicurio.kafkasql.topic.partitions=1
apicurio.storage.snapshot.location=$APICURIO_HOME/tmp
apicurio.import.work-dir=$APICURIO_HOME/tmp
# Let tests clean up subjects through the Confluent API (DELETE /subjects/...), as Confluent allows.
apicurio.rest.deletion.group.enabled=true
apicurio.rest.deletion.artifact.enabled=true
apicurio.rest.deletion.artifact-version.enabled=true
EOF
}

apicurio_up() {
  write_apicurio_config
  if [[ -n $(service_pid apicurio) ]]; then APICURIO_WAS_UP=1; return; fi
  APICURIO_WAS_UP=0
  # Java 25 from .stack/jre: Apicurio 3.3 needs Java 21 or newer (see install-deps.sh).
  start_bg apicurio "$APICURIO_HOME" "$INSTALL/jre/bin/java" -Xms64m -Xmx384m \
    -Djava.util.logging.manager=org.jboss.logmanager.LogManager -Djava.io.tmpdir="$APICURIO_HOME/tmp" \
    -jar "$APICURIO_JAR"
}

apicurio_ready() {
  [[ $(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$APICURIO_PORT/apis/ccompat/v7/subjects") == 200 ]]
}

apicurio_finish() { wait_ready apicurio 180 apicurio_ready; }

# --- nginx: https and basic auth in front of the registry ----------------------------------------

write_nginx_config() {
  mkdir -p "$NGINX_HOME/tmp"
  # htpasswd in the apr1 form, which nginx reads; openssl makes it (no apache2-utils needed).
  printf '%s:%s\n' "$REGISTRY_USER" "$(openssl passwd -apr1 "$REGISTRY_PASSWORD")" >"$NGINX_HOME/htpasswd"
  chmod 600 "$NGINX_HOME/htpasswd"
  local user_line=""
  # Started by root, nginx would hand its workers to "nobody", who cannot read these files.
  if (($(id -u) == 0)); then user_line="user root;"; fi
  cat >"$NGINX_HOME/nginx.conf" <<EOF
# Written by scripts/stack.sh at every up: edit the script, not this file.
$user_line
daemon off;
worker_processes 1;
pid $RUN/nginx.self.pid;
error_log $LOGS/nginx.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $NGINX_HOME/tmp/body;
  proxy_temp_path $NGINX_HOME/tmp/proxy;
  fastcgi_temp_path $NGINX_HOME/tmp/fastcgi;
  uwsgi_temp_path $NGINX_HOME/tmp/uwsgi;
  scgi_temp_path $NGINX_HOME/tmp/scgi;
  server {
    listen 127.0.0.1:$REGISTRY_TLS_PORT ssl;
    ssl_certificate $TLS/server.crt;
    ssl_certificate_key $TLS/server.key;
    auth_basic "schema registry";
    auth_basic_user_file $NGINX_HOME/htpasswd;
    location / {
      proxy_pass http://127.0.0.1:$APICURIO_PORT;
      proxy_set_header Host \$host:\$server_port;
      proxy_http_version 1.1;
    }
  }
}
EOF
}

nginx_up() {
  write_nginx_config
  local pid
  pid=$(service_pid nginx)
  if [[ -n $pid ]]; then
    NGINX_WAS_UP=1
    # Reloads the config: a changed user or password takes effect.
    kill -HUP "$pid" 2>/dev/null || true
    return
  fi
  NGINX_WAS_UP=0
  start_bg nginx "$NGINX_HOME" "$(command -v nginx || echo /usr/sbin/nginx)" -e "$LOGS/nginx.log" -p "$NGINX_HOME" -c "$NGINX_HOME/nginx.conf"
}

# The password goes to curl on stdin, not on its command line (which any local user can read).
nginx_ready() {
  [[ $(printf 'user = "%s:%s"\n' "$REGISTRY_USER" "$REGISTRY_PASSWORD" | curl -s -K - -o /dev/null -m 5 -w '%{http_code}' \
    --cacert "$TLS/ca.crt" "https://127.0.0.1:$REGISTRY_TLS_PORT/apis/ccompat/v7/subjects") == 200 ]]
}

nginx_finish() { wait_ready nginx 30 nginx_ready; }

# --- commands -------------------------------------------------------------------------------------

report_up() {
  local name=$1 was_up=$2 t0=$3 addr=$4
  if ((was_up)); then say "$name" "already running (pid $(service_pid "$name")) $addr"
  else say "$name" "up in $((SECONDS - t0))s (pid $(service_pid "$name")) $addr, log $LOGS/$name.log"; fi
}

cmd_up() {
  bash "$ROOT/scripts/install-deps.sh"
  mkdir -p "$RUN" "$LOGS"
  check_ports
  tls_once
  local t0=$SECONDS
  # MariaDB and Kafka start side by side; Apicurio needs Kafka, so it goes last.
  mariadb_up
  kafka_up
  mariadb_finish
  report_up mariadb "$MARIADB_WAS_UP" "$t0" "127.0.0.1:$MARIADB_PORT"
  kafka_finish
  report_up kafka "$KAFKA_WAS_UP" "$t0" "127.0.0.1:$KAFKA_PORT (Kafka $KAFKA_VERSION)"
  local t1=$SECONDS
  apicurio_up
  apicurio_finish
  report_up apicurio "$APICURIO_WAS_UP" "$t1" "http://127.0.0.1:$APICURIO_PORT (Apicurio $APICURIO_VERSION)"
  local t2=$SECONDS
  nginx_up
  nginx_finish
  report_up nginx "$NGINX_WAS_UP" "$t2" "https://127.0.0.1:$REGISTRY_TLS_PORT (the registry with TLS and basic auth)"
  if ((MARIADB_WAS_UP && KAFKA_WAS_UP && APICURIO_WAS_UP && NGINX_WAS_UP)); then echo "stack: already up"
  else echo "stack: up in $((SECONDS - t0))s"; fi
}

cmd_down() {
  mkdir -p "$RUN"
  # Reverse order: Apicurio writes to Kafka.
  stop_service nginx 10
  stop_service apicurio 30
  stop_service kafka 60
  stop_service mariadb 60
}

cmd_status() {
  local name pid down=0
  for name in "${SERVICES[@]}"; do
    pid=$(service_pid "$name")
    if [[ -n $pid ]]; then say "$name" "up (pid $pid) 127.0.0.1:$(service_port "$name")"
    else say "$name" "down"; down=1; fi
  done
  return $((down ? 3 : 0))
}

# The settings that point the programs at the secure endpoints, NAME=value a line and nothing else
# (`set -a; . <(make -s secure-env); set +a`, or `env $(make -s secure-env) auction-web`).
cmd_secure_env() {
  cat <<EOF
KAFKA_BROKERS=127.0.0.1:$KAFKA_SASL_SSL_PORT
KAFKA_SECURITY_PROTOCOL=SASL_SSL
KAFKA_SASL_MECHANISM=SCRAM-SHA-512
KAFKA_SASL_USERNAME=$KAFKA_SCRAM_USER
KAFKA_SASL_PASSWORD=$KAFKA_SCRAM_PASSWORD
KAFKA_SSL_CA_LOCATION=$TLS/ca.crt
SCHEMA_REGISTRY_URL=https://127.0.0.1:$REGISTRY_TLS_PORT/apis/ccompat/v7
SCHEMA_REGISTRY_USERNAME=$REGISTRY_USER
SCHEMA_REGISTRY_PASSWORD=$REGISTRY_PASSWORD
SCHEMA_REGISTRY_CA_LOCATION=$TLS/ca.crt
DATABASE_URL=mysql://auction:$AUCTION_DB_PASSWORD@127.0.0.1:$MARIADB_PORT/auction?ssl-mode=VERIFY_IDENTITY
DATABASE_SSL_CA=$TLS/ca.crt
EOF
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  secure-env) cmd_secure_env ;;
  *) echo "usage: $0 up|down|status|secure-env" >&2; exit 2 ;;
esac
