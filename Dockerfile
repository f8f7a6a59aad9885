# syntax=docker/dockerfile:1
#
# rwop-guard container image: one static binary FROM scratch, non-root (65532:65532), for
# linux/amd64 and linux/arm64.
#
# Two ways to build it:
#
# 1. From source (needs a registry for the Rust image; the default, last stage `runtime`). The
#    builder compiles for the platform being built (TARGETARCH); .git is not in the context, so
#    pass the commit for `rwop-guard --version`:
#
#      docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t rwop-guard:0.1.0 .
#      docker buildx build --platform linux/amd64,linux/arm64 --build-arg GIT_COMMIT=... .
#
#    Without GIT_COMMIT the binary says `(commit unknown)`.
#
# 2. Offline, from static binaries built on the host (what CI does; no image is pulled,
#    because buildah skips the stages `prebuilt` does not depend on). The binaries carry their
#    own commit stamp; GIT_COMMIT only labels the image:
#
#      rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl  # once; plus
#      # Debian's musl-tools, and cargo-zigbuild + ziglang (PyPI) for the aarch64 cross build
#      cargo build --release --locked --target x86_64-unknown-linux-musl
#      cargo zigbuild --release --locked --target aarch64-unknown-linux-musl
#      for arch in amd64 arm64; do
#        STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot buildah build --pull=never \
#          --target prebuilt --platform linux/$arch --build-arg GIT_COMMIT="$(git rev-parse HEAD)" \
#          --build-arg BINARY=target/<triple of $arch>/release/rwop-guard \
#          --manifest rwop-guard:0.1.0 .
#      done
#
#    (.dockerignore lets exactly those release binaries into the context.)
#    scripts/chart-checks.sh BINARY [ARM64_BINARY] does this and checks the image index.

ARG RUST_IMAGE=rust:1.95-bookworm

# ---- builder: static musl binary for the platform being built -------------------------------
FROM ${RUST_IMAGE} AS builder
# Set by BuildKit/buildah from --platform (amd64 or arm64).
ARG TARGETARCH=amd64
# The commit the sources come from (.git is not in the context), for `rwop-guard --version`.
ARG GIT_COMMIT=unknown
ARG GIT_DIRTY=0
# musl-gcc: for crates that compile C code (ring) for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/* \
 && case "${TARGETARCH}" in \
      amd64) echo x86_64-unknown-linux-musl >/rust-target ;; \
      arm64) echo aarch64-unknown-linux-musl >/rust-target ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RWOP_GUARD_GIT_COMMIT="${GIT_COMMIT}" RWOP_GUARD_GIT_DIRTY="${GIT_DIRTY}" \
    cargo build --release --locked --target "$(cat /rust-target)" \
 && install -D -m 0755 "target/$(cat /rust-target)/release/rwop-guard" /out/rwop-guard

# ---- base: everything of the final image but the binary --------------------------------------
FROM scratch AS base
ARG VERSION=0.1.0
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="rwop-guard" \
      org.opencontainers.image.description="Kubernetes admission webhook that enforces and adopts ReadWriteOncePod for single-writer volumes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
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
