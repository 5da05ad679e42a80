# syntax=docker/dockerfile:1
#
# One image for the whole application, two binaries:
#   auction-web                                      the bidding site (the default command)
#   auction-consumer db-writer | file-backup | migrate
# The templates, the Avro schema and the SQL migrations are compiled into the binaries
# (include_str!), so the runtime image holds the two binaries and nothing else of the repo.
#
#   docker build -t auction:local .            (BuildKit: Docker 23+ uses it by default)
#
# Every setting is an environment variable (see web/src/startup.rs, common/src/config.rs,
# consumers/src/cli.rs); docker-compose.yml shows a complete set.

# --- build -----------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# rdkafka builds its bundled librdkafka with its own configure script and make (no cmake):
# it needs a C/C++ toolchain, make, python3, zlib and OpenSSL (TLS and SCRAM for Kafka, and the
# TLS of the registry and MySQL clients), found through pkg-config.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential make g++ python3 zlib1g-dev libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole workspace (see .dockerignore): cargo needs every member's manifest and Cargo.lock,
# and the crates include templates/, schemas/ and sql/migrations/ at compile time.
COPY . .

# The registry and target/ live in cache mounts, so a rebuild after a code change recompiles only
# what changed. A cache mount is not part of the image: the binaries are copied out of it here.
RUN --mount=type=cache,id=auction-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=auction-cargo-git,target=/usr/local/cargo/git/db \
    --mount=type=cache,id=auction-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p auction-web -p auction-consumers \
 && mkdir -p /out \
 && cp target/release/auction-web target/release/auction-consumer /out/

# --- runtime ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# Same Debian release as the builder, so the glibc the binaries were linked against is here.
# libz comes with the base image; libssl3 is the TLS of every client (Kafka, registry, MySQL), and
# ca-certificates the CAs a managed service's certificate is checked against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*

# A non-root user, and /data owned by it: file-backup writes its CSV there, and a named volume
# mounted on /data starts out with this ownership.
RUN groupadd --system --gid 10001 auction \
 && useradd --system --uid 10001 --gid auction --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin auction \
 && install -d -o auction -g auction -m 0750 /data

COPY --from=builder /out/auction-web /out/auction-consumer /usr/local/bin/

# Listen on all interfaces inside the container (the binary's default, 127.0.0.1:8080, would be
# unreachable through a published port). BACKUP_CSV is only read by file-backup.
ENV BIND_ADDR=0.0.0.0:8080 \
    BACKUP_CSV=/data/bids.csv \
    RUST_LOG=info

USER 10001:10001
# 8080: the site (and its GET /metrics). 9464: a consumer's GET /metrics and /readyz, served only
# when METRICS_ADDR is set (docker-compose.yml sets 0.0.0.0:9464).
EXPOSE 8080 9464
# No HEALTHCHECK here: the site and the consumers run from this image and answer on different
# ports. The site's check (GET /readyz) is in docker-compose.yml.
CMD ["auction-web"]
