# syntax=docker/dockerfile:1
# One image for every role: `culprit serve --role ingest|hunter|correlator|gateway` and
# `culprit twin serve`. Build: docker build -t culprit:dev .

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# protox compiles the protos in Rust, so no protoc is installed here.
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binary is
# copied out because the target mount does not outlive this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p culprit \
 && install -m 0755 target/release/culprit /usr/local/bin/culprit

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 culprit \
 && useradd --system --uid 10001 --gid culprit --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin culprit
COPY --from=build /usr/local/bin/culprit /usr/local/bin/culprit
# The bundled scenario, so the twin runs from the image alone.
COPY --from=build /src/examples/scenarios /scenarios
COPY deploy/culprit.example.toml /etc/culprit/culprit.toml
USER 10001:10001
# gRPC gateway, ingest webhook, metrics and health, twin.
EXPOSE 50051 8080 9090 8443
ENTRYPOINT ["/usr/local/bin/culprit"]
CMD ["serve"]
