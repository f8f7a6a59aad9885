#!/usr/bin/env bash
# Static checks of the install artefacts: the Helm chart, the Dockerfile and (optionally) the
# container image. Offline; tools come from scripts/install-tools.sh.
#
#   scripts/chart-checks.sh [STATIC_BINARY [ARM64_STATIC_BINARY]]
#
#   1. helm lint --strict, once per values file in charts/rwop-guard/ci/
#   2. helm template of each, validated by kubernetes-validate --strict against Kubernetes
#      $KUBE_VERSIONS (default "1.30 1.35": the chart's minimum and a current release).
#      Custom resources (cert-manager.io, monitoring.coreos.com) have no schema there: they are
#      filtered out before validation and only checked for apiVersion/kind/metadata.name here.
#   3. hadolint Dockerfile
#   4. if STATIC_BINARY (or $RWOP_GUARD_STATIC_BIN) is given: an offline buildah build of the
#      Dockerfile's `prebuilt` stage for linux/amd64 from that binary, then `buildah inspect` of
#      the image's os/arch, Entrypoint, User, exposed ports and revision label, and `rwop-guard
#      --help` and `--version` run inside the image with `buildah run` (chroot isolation); the
#      version must be the binary's own (commit stamp included).
#   5. if ARM64_STATIC_BINARY (or $RWOP_GUARD_STATIC_BIN_ARM64) is given too: the same for
#      linux/arm64 (its binary run through qemu-aarch64-static), then one image index
#      (`buildah manifest`) with both, checked to list exactly linux/amd64 and linux/arm64, each
#      written as an OCI image layout and read back blob by blob: an OCI image index listing
#      exactly linux/amd64 and linux/arm64, each an image whose config says that os/architecture
#      (and the entrypoint, user and revision) and whose layer holds that architecture's binary.
#      RWOP_IMAGE_LAYOUT=DIR keeps the layout there (for `skopeo copy --all oci:DIR:VERSION …`);
#      otherwise it and the images are removed afterwards.
#
# Exits non-zero on the first failure, saying which check failed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${RWOP_TOOLS:-$HOME/.cache/rwop-guard/tools}"
export PATH="$tools/bin:$PATH"
chart="$repo/charts/rwop-guard"
kube_versions="${KUBE_VERSIONS:-1.30 1.35}"
static_bin="${1:-${RWOP_GUARD_STATIC_BIN:-}}"
arm64_bin="${2:-${RWOP_GUARD_STATIC_BIN_ARM64:-}}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'chart-checks: FAILED: %s\n' "$*" >&2; exit 1; }

for tool in helm kubernetes-validate hadolint; do
  command -v "$tool" >/dev/null || die "$tool not found; run scripts/install-tools.sh"
done
python="$tools/venv/bin/python"
[ -x "$python" ] || die "$python not found; run scripts/install-tools.sh"

# split.py reads a multi-document manifest on stdin; writes the documents that have a schema in
# kubernetes-validate to $1 and checks the custom resources' basic shape.
cat >"$work/split.py" <<'PY'
import sys, yaml
CUSTOM_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")
core, custom = [], []
for doc in yaml.safe_load_all(sys.stdin):
    if not doc:
        continue
    for key in ("apiVersion", "kind"):
        if not doc.get(key):
            sys.exit(f"a rendered document has no {key}: {doc!r:.200}")
    if not (doc.get("metadata") or {}).get("name"):
        sys.exit(f"{doc['kind']} without metadata.name")
    (custom if doc["apiVersion"].startswith(CUSTOM_GROUPS) else core).append(doc)
with open(sys.argv[1], "w") as out:
    yaml.safe_dump_all(core, out, sort_keys=False)
kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in custom)
print(f"   {len(core)} core objects validated; custom resources not in the schemas: "
      f"{', '.join(kinds) or 'none'}", file=sys.stderr)
PY
split_manifests() { "$python" "$work/split.py" "$1"; }

values_files=("$chart"/ci/*-values.yaml)
[ -e "${values_files[0]}" ] || die "no values files in $chart/ci"

for values in "${values_files[@]}"; do
  name="$(basename "$values" -values.yaml)"

  step "helm lint --strict ($name)"
  helm lint --strict "$chart" -f "$values" >"$work/lint.log" 2>&1 \
    || { cat "$work/lint.log" >&2; die "helm lint ($name)"; }
  grep -E '^\[(WARNING|ERROR)\]' "$work/lint.log" >&2 && die "helm lint ($name) reported problems"

  step "helm template | kubernetes-validate --strict ($name; Kubernetes $kube_versions)"
  helm template rwop-guard "$chart" --namespace rwop-guard -f "$values" >"$work/$name.yaml" \
    || die "helm template ($name)"
  split_manifests "$work/$name-core.yaml" <"$work/$name.yaml" || die "manifest shape ($name)"
  kv_args=()
  for v in $kube_versions; do kv_args+=(-k "$v"); done
  # kubernetes-validate exits 0 on a kind it has no schema for (it only prints WARN), so any
  # line that is not an INFO pass counts as a failure.
  kubernetes-validate --strict "${kv_args[@]}" "$work/$name-core.yaml" >"$work/kv.log" 2>&1 \
    || { cat "$work/kv.log" >&2; die "kubernetes-validate ($name)"; }
  if grep -v '^INFO ' "$work/kv.log" >&2; then die "kubernetes-validate ($name)"; fi
done

step "helm template must refuse tls.mode=secret without tls.caBundle"
if helm template rwop-guard "$chart" --set tls.mode=secret --set tls.secretName=x \
  >/dev/null 2>"$work/err.log"; then
  die "tls.mode=secret without caBundle rendered"
fi
grep -q 'tls.caBundle is required' "$work/err.log" || { cat "$work/err.log" >&2; die "unclear error for missing caBundle"; }

step "hadolint Dockerfile"
hadolint "$repo/Dockerfile" || die "hadolint Dockerfile"

# build_image ARCH BINARY: an offline buildah build of the `prebuilt` stage for linux/ARCH from
# BINARY, tagged $image-ARCH, and the checks of its config and contents.
build_image() {
  local arch="$1" bin="$2" tag="$image-$1"
  step "buildah build --target prebuilt --platform linux/$arch from $bin (offline)"
  [ -x "$bin" ] || die "$bin is not an executable file"
  if command -v file >/dev/null && ! file -L "$bin" | grep -Eq 'statically linked|static-pie linked'; then
    file -L "$bin" >&2
    die "$bin is not statically linked: it would not run FROM scratch"
  fi
  # The context holds only the binary: nothing else is sent, and no .dockerignore applies.
  rm -rf "$work/ctx" && mkdir -p "$work/ctx"
  cp "$bin" "$work/ctx/rwop-guard"
  buildah build --quiet --pull=never --layers=false --target prebuilt --platform "linux/$arch" \
    --build-arg BINARY=rwop-guard --build-arg GIT_COMMIT="$revision" \
    -f "$repo/Dockerfile" -t "$tag" "$work/ctx" >&2 \
    || die "buildah build (linux/$arch)"
  built+=("$tag")
  local entrypoint user ports os architecture label
  entrypoint="$(buildah inspect --type image --format '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}' "$tag")"
  user="$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$tag")"
  # shellcheck disable=SC2016 # a Go template, not shell
  ports="$(buildah inspect --type image --format '{{range $p, $_ := .OCIv1.Config.ExposedPorts}}{{$p}} {{end}}' "$tag")"
  os="$(buildah inspect --type image --format '{{.OCIv1.OS}}' "$tag")"
  architecture="$(buildah inspect --type image --format '{{.OCIv1.Architecture}}' "$tag")"
  label="$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}' "$tag")"
  printf '   os/arch=%s/%s Entrypoint=%s User=%s ExposedPorts=%s revision=%s\n' \
    "$os" "$architecture" "$entrypoint" "$user" "$ports" "$label" >&2
  [ "$os/$architecture" = "linux/$arch" ] || die "image config says $os/$architecture, want linux/$arch"
  [ "$entrypoint" = 'rwop-guard serve ' ] || die "image Entrypoint is [$entrypoint], want [rwop-guard serve]"
  [ "$user" = "65532:65532" ] || die "image User is $user, want 65532:65532"
  case " $ports" in *" 8443/tcp "*) ;; *) die "image does not expose 8443/tcp" ;; esac
  case " $ports" in *" 9090/tcp "*) ;; *) die "image does not expose 9090/tcp" ;; esac
  [ "$label" = "$revision" ] || die "image label org.opencontainers.image.revision is $label, want $revision"
  # The binary must be where the entrypoint finds it, executable by the non-root user, and be
  # the one given.
  local container mnt mode version_in_image want_version
  container="$(buildah from --pull-never --platform "linux/$arch" "$tag")"
  mnt="$(buildah mount "$container")"
  [ -x "$mnt/usr/local/bin/rwop-guard" ] || { buildah rm "$container" >/dev/null; die "/usr/local/bin/rwop-guard missing or not executable"; }
  mode="$(stat -c '%a' "$mnt/usr/local/bin/rwop-guard")"
  cmp -s "$bin" "$mnt/usr/local/bin/rwop-guard" || { buildah rm "$container" >/dev/null; die "the image's binary is not $bin"; }
  want_version="$(run_for "$arch" "$bin" --version)" || { buildah rm "$container" >/dev/null; die "$bin --version"; }
  if [ "$arch" = "$host_arch" ]; then
    # Run it inside the image (chroot isolation works without a container runtime): proves the
    # binary needs nothing from a base image, as the image's user.
    if ! buildah run "$container" -- rwop-guard --help >"$work/run.log" 2>&1 \
      || ! version_in_image="$(buildah run "$container" -- rwop-guard --version 2>"$work/run.log")"; then
      cat "$work/run.log" >&2
      buildah rm "$container" >/dev/null
      die "rwop-guard failed inside the image"
    fi
  else
    # Another architecture: buildah run would need binfmt_misc; run the image's file through
    # the emulator instead.
    version_in_image="$(run_for "$arch" "$mnt/usr/local/bin/rwop-guard" --version)" \
      || { buildah rm "$container" >/dev/null; die "the image's binary does not run under emulation"; }
  fi
  buildah umount "$container" >/dev/null
  buildah rm "$container" >/dev/null
  [ "$mode" = 755 ] || die "/usr/local/bin/rwop-guard has mode $mode, want 755"
  [ "$version_in_image" = "$want_version" ] || die "--version in the image says [$version_in_image], want [$want_version]"
  printf '   /usr/local/bin/rwop-guard (mode %s): %s\n' "$mode" "$version_in_image" >&2
}

# run_for ARCH BINARY ARGS...: runs BINARY, through qemu-user when ARCH is not this machine's.
run_for() {
  local arch="$1" bin="$2"
  shift 2
  if [ "$arch" = "$host_arch" ]; then
    "$bin" "$@"
  else
    command -v "qemu-$(qemu_name "$arch")-static" >/dev/null \
      || die "qemu-$(qemu_name "$arch")-static not found; run scripts/install-tools.sh"
    "qemu-$(qemu_name "$arch")-static" "$bin" "$@"
  fi
}
qemu_name() { case "$1" in amd64) echo x86_64 ;; arm64) echo aarch64 ;; *) echo "$1" ;; esac; }

if [ -n "$static_bin" ]; then
  command -v buildah >/dev/null || die "buildah not found; run scripts/install-tools.sh"
  # vfs + chroot: no overlay mounts and no user namespaces needed (works in containers).
  export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
  image="localhost/rwop-guard:chart-checks-$$"
  index="$image"
  revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
  host_arch=amd64
  [ "$(uname -m)" = aarch64 ] && host_arch=arm64
  built=()
  remove_images() {
    local i
    buildah manifest rm "$index" >/dev/null 2>&1 || true
    for i in "${built[@]}"; do buildah rmi "$i" >/dev/null 2>&1 || true; done
    rm -rf "$work"
  }
  trap remove_images EXIT

  build_image amd64 "$static_bin"
  if [ -n "$arm64_bin" ]; then
    build_image arm64 "$arm64_bin"

    step "image index: linux/amd64 + linux/arm64 (buildah manifest), as an OCI image layout"
    buildah manifest create "$index" >/dev/null || die "buildah manifest create"
    for arch in amd64 arm64; do
      buildah manifest add "$index" "containers-storage:$image-$arch" >/dev/null \
        || die "buildah manifest add linux/$arch"
    done
    # Written out as an OCI image layout (what a registry push or `skopeo copy --all` takes);
    # the checks read that, blob by blob, not buildah's view of it.
    layout="${RWOP_IMAGE_LAYOUT:-$work/oci}"
    version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)"
    buildah manifest push --all --quiet --format oci "$index" "oci:$layout:$version" >&2 \
      || die "buildah manifest push --format oci"
    blob() { printf '%s/blobs/%s' "$layout" "${1/://}"; }
    index_digest="$(jq -r --arg v "$version" \
      '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $v) | .digest' "$layout/index.json")"
    [ -n "$index_digest" ] || die "the OCI layout has no index tagged $version"
    jq -e '.mediaType == "application/vnd.oci.image.index.v1+json"' "$(blob "$index_digest")" >/dev/null \
      || die "$version is not an OCI image index"
    platforms="$(jq -r '[.manifests[] | "\(.platform.os)/\(.platform.architecture)"] | sort | join(" ")' "$(blob "$index_digest")")"
    [ "$platforms" = "linux/amd64 linux/arm64" ] \
      || { cat "$(blob "$index_digest")" >&2; die "the index lists [$platforms], want [linux/amd64 linux/arm64]"; }
    # Each entry: an OCI image manifest whose config says that os/architecture, runs the
    # entrypoint as 65532, and whose top layer holds that architecture's binary, byte for byte.
    for arch in amd64 arm64; do
      if [ "$arch" = amd64 ]; then want_bin="$static_bin"; else want_bin="$arm64_bin"; fi
      manifest_digest="$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a) | .digest' "$(blob "$index_digest")")"
      manifest="$(blob "$manifest_digest")"
      jq -e '.mediaType == "application/vnd.oci.image.manifest.v1+json" and (.layers | length) >= 1' "$manifest" >/dev/null \
        || die "linux/$arch: not an OCI image manifest with layers"
      config="$(blob "$(jq -r .config.digest "$manifest")")"
      summary="$(jq -r '"\(.os)/\(.architecture) entrypoint=\(.config.Entrypoint | join(" ")) user=\(.config.User) revision=\(.config.Labels["org.opencontainers.image.revision"])"' "$config")"
      [ "$summary" = "linux/$arch entrypoint=rwop-guard serve user=65532:65532 revision=$revision" ] \
        || die "linux/$arch config: $summary"
      # The last layer is the COPY of the binary (before it: the empty scratch stage).
      layer="$(blob "$(jq -r '.layers[-1].digest' "$manifest")")"
      tar -xzOf "$layer" usr/local/bin/rwop-guard 2>/dev/null | cmp -s - "$want_bin" \
        || die "linux/$arch: the layer's usr/local/bin/rwop-guard is not $want_bin"
      printf '   %s  %s (binary = %s)\n' "$manifest_digest" "$summary" "${want_bin#"$repo"/}" >&2
    done
    printf '   index %s in %s\n' "$index_digest" "$layout" >&2
  else
    step "image index skipped (pass an arm64 binary as the second argument)"
  fi
else
  step "image build skipped (pass a static binary or set RWOP_GUARD_STATIC_BIN)"
fi

printf '\nchart-checks: all checks passed\n' >&2
