# syntax=docker/dockerfile:1
#
# rwop-guard container image: one static binary FROM scratch, non-root (65532:65532).
#
# Two ways to build it:
#
# 1. From source (needs a registry for the Rust image; the default, last stage `runtime`):
#
#      docker build -t rwop-guard:0.1.0 .
#      buildah build -t rwop-guard:0.1.0 .
#
# 2. Offline, from a static binary built on the host (what CI does; no image is pulled,
#    because buildah skips the stages `prebuilt` does not depend on):
#
#      rustup target add x86_64-unknown-linux-musl     # once; plus Debian's musl-tools
#      cargo build --release --locked --target x86_64-unknown-linux-musl
#      mkdir -p /tmp/ctx && cp target/x86_64-unknown-linux-musl/release/rwop-guard /tmp/ctx/
#      STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot \
#        buildah build --pull=never --target prebuilt -f Dockerfile -t rwop-guard:0.1.0 /tmp/ctx
#
#    Or with the repository as the context (.dockerignore lets the two release binaries in):
#
#      buildah build --pull=never --target prebuilt \
#        --build-arg BINARY=target/x86_64-unknown-linux-musl/release/rwop-guard -t rwop-guard:0.1.0 .
#
#    scripts/chart-checks.sh BINARY does this and checks the result.

ARG RUST_IMAGE=rust:1.95-bookworm

# ---- builder: static musl binary ------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
# musl-gcc: for crates that compile C code (ring) for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl \
 && install -D -m 0755 target/x86_64-unknown-linux-musl/release/rwop-guard /out/rwop-guard

# ---- base: everything of the final image but the binary --------------------------------------
FROM scratch AS base
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="rwop-guard" \
      org.opencontainers.image.description="Kubernetes admission webhook that enforces and adopts ReadWriteOncePod for single-writer volumes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# scratch has no environment: give the entrypoint's bare name a PATH to be found on.
ENV PATH=/usr/local/bin
# Numeric user and group: scratch has no /etc/passwd. Matches the chart's securityContext.
USER 65532:65532
# 8443: webhook (HTTPS); 9090: metrics and probes (plain HTTP).
EXPOSE 8443 9090
ENTRYPOINT ["rwop-guard", "serve"]

# ---- prebuilt: the binary from the build context (offline builds) ---------------------------
FROM base AS prebuilt
# Path of the static binary inside the build context.
ARG BINARY=rwop-guard
COPY --chmod=0755 ${BINARY} /usr/local/bin/rwop-guard

# ---- runtime (default): the binary from the builder stage -----------------------------------
FROM base AS runtime
COPY --from=builder --chmod=0755 /out/rwop-guard /usr/local/bin/rwop-guard
