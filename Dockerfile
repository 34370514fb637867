# syntax=docker/dockerfile:1
#
# mobile-backend container image: a multi-stage build producing a small
# runtime image that runs as a non-root user.
#
# There is no Docker engine on the development machine. This file is kept
# correct by review, not by a run, so re-read it against Cargo.toml and
# src/config.rs when either changes.
#
# Build:  docker build -t mobile-backend .
# Run:    see docker-compose.yml, and the "Configuration" section of docs/operations.md.
#
# The build needs the committed sqlx offline data in .sqlx/. The query
# macros cannot reach a database here, so SQLX_OFFLINE=true makes them read
# .sqlx/ only. If the build fails with "no cached data for this query", run
# scripts/sqlx-prepare.sh and commit .sqlx/.

# ---------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------
# The minimum Rust is the crate's rust-version, 1.89 (Cargo.toml; the highest
# rust-version among the locked dependencies, uuid's). `rust:1-bookworm` is the
# current stable release, which is newer.
FROM rust:1-bookworm AS builder

ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

WORKDIR /build

# 1. Dependencies only, so that this layer is reused until Cargo.toml or
#    Cargo.lock changes.
#
#    .cargo/config.toml carries the project's build settings (it also sets
#    SQLX_OFFLINE=true).
#
#    The manifest names a lib, a bin and two test targets, so each gets a
#    placeholder source file. The placeholder crate itself has no sqlx
#    macros and no migrations, so it needs neither .sqlx/ nor migrations/.
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
RUN mkdir -p src tests/api \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && echo 'fn main() {}' > tests/api/main.rs \
 && echo 'fn main() {}' > tests/shutdown.rs \
 && cargo build --release --locked --bin mobile-backend \
 && rm -rf src tests

# 2. The real crate.
#    * .sqlx/ holds the query descriptions (offline mode).
#    * migrations/ is embedded into the binary by sqlx::migrate!.
#    * COPY keeps the files' original modification times, which may be older
#      than the placeholder build. Touching the crate roots makes Cargo
#      rebuild the crate instead of reusing the placeholder.
COPY build.rs ./
COPY .sqlx ./.sqlx
COPY migrations ./migrations
COPY src ./src
COPY tests ./tests
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin mobile-backend \
 && cp target/release/mobile-backend /usr/local/bin/mobile-backend

# ---------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------
# Same Debian release as the builder, so the glibc versions match. TLS (to
# PostgreSQL and SMTP) is rustls and needs no OpenSSL, only the CA
# certificates.
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid, so volume ownership and orchestrator
# securityContext (runAsUser: 10001) line up.
#
# /data is DATA_DIR. Production writes nothing there. In development
# (docker-compose.yml), the generated keys live there, on a volume. A new
# named volume copies this directory's owner and mode.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app \
 && mkdir /data \
 && chown app:app /data \
 && chmod 0700 /data

COPY --from=builder /usr/local/bin/mobile-backend /usr/local/bin/mobile-backend

# Production by default. The service then refuses to start without
# DATABASE_URL, an https PUBLIC_BASE_URL, DATA_KEYS, BLIND_INDEX_KEY,
# CODE_HMAC_KEY, an encrypting MAIL_TRANSPORT and a real MAIL_FROM. It
# never reads a .env file.
#
# The listeners bind all interfaces inside the container:
#   * 8080 (API): put a TLS-terminating proxy in front of it.
#   * 9090 (metrics): publish it only on a private network.
ENV APP_ENV=production \
    LISTEN_ADDR=0.0.0.0:8080 \
    METRICS_ADDR=0.0.0.0:9090 \
    DATA_DIR=/data

USER 10001:10001
WORKDIR /data

EXPOSE 8080 9090

# No HEALTHCHECK: the slim image has no HTTP client (no curl or wget), and
# adding one only for a probe enlarges the attack surface. Let the
# orchestrator probe over HTTP:
#   * liveness:  GET /healthz on port 8080 (touches no dependency)
#   * readiness: GET /readyz on port 8080 (503 while the database is away)
# docker-compose.yml has a probe that uses bash's /dev/tcp instead.
#
# Stopping: the service handles SIGTERM itself. It drains in-flight requests
# for up to SHUTDOWN_GRACE_SECS (default 30), so give the orchestrator a
# longer grace period than that.
ENTRYPOINT ["/usr/local/bin/mobile-backend"]
CMD ["serve"]
