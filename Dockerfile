# syntax=docker/dockerfile:1
#
# The head-end's binaries (headend, meter-sim, billing) in one image: built in a Rust stage, run
# on Debian slim as an unprivileged user. Nothing secret goes in: the database and broker URLs and
# the DLMS keys come at run time (environment, mounted files; see helm/headend).
#
#   docker build -t headend:0.1.0 .
#   docker run --rm -e DATABASE_URL=… -e MQTT_URL=… headend:0.1.0            # headend serve
#   docker run --rm -e DATABASE_URL=… headend:0.1.0 migrate
#   docker run --rm --entrypoint meter-sim headend:0.1.0 --help
#
# The builder and the runtime share one Debian release, so the binaries find the same glibc.
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Registry and target directory cached between builds (BuildKit); the binaries are copied out of
# the cache mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p headend -p meter-sim -p billing --bins \
 && mkdir -p /out \
 && cp target/release/headend target/release/meter-sim target/release/billing /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="headend" \
      org.opencontainers.image.description="Smart-meter head-end: MQTT intake, DLMS/Modbus polling, DLMS push, PostgreSQL/TimescaleDB storage, portal and API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it without /etc/passwd lookups.
RUN groupadd --system --gid 10001 headend \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin headend
COPY --from=build /out/ /usr/local/bin/
# The documented configuration and the Modbus register maps (modbus.maps_dir defaults to
# config/modbus, relative to the working directory).
COPY config/ /usr/share/headend/config/
WORKDIR /usr/share/headend
USER 10001:10001
# HTTP (API, pages, /livez, /readyz, /metrics) and the DLMS push listener (when dlms.push_listen is set).
EXPOSE 8080 4059
ENTRYPOINT ["/usr/local/bin/headend"]
CMD ["serve"]
