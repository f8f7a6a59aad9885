#!/usr/bin/env bash
# Static checks of the install artefacts: the Helm chart, the Dockerfile and (optionally) the
# container image. Offline; tools come from scripts/install-tools.sh.
#
#   scripts/chart-checks.sh [STATIC_BINARY]
#
#   1. helm lint --strict, once per values file in charts/rwop-guard/ci/
#   2. helm template of each, validated by kubernetes-validate --strict against Kubernetes
#      $KUBE_VERSIONS (default "1.30 1.35": the chart's minimum and a current release).
#      Custom resources (cert-manager.io, monitoring.coreos.com) have no schema there: they are
#      filtered out before validation and only checked for apiVersion/kind/metadata.name here.
#   3. hadolint Dockerfile
#   4. if STATIC_BINARY (or $RWOP_GUARD_STATIC_BIN) is given: an offline buildah build of the
#      Dockerfile's `prebuilt` stage from that binary, then `buildah inspect` of the image's
#      Entrypoint, User and exposed ports, and `rwop-guard --help` run inside the image with
#      `buildah run` (chroot isolation). The image is removed afterwards.
#
# Exits non-zero on the first failure, saying which check failed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${RWOP_TOOLS:-$HOME/.cache/rwop-guard/tools}"
export PATH="$tools/bin:$PATH"
chart="$repo/charts/rwop-guard"
kube_versions="${KUBE_VERSIONS:-1.30 1.35}"
static_bin="${1:-${RWOP_GUARD_STATIC_BIN:-}}"

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

if [ -n "$static_bin" ]; then
  step "buildah build --target prebuilt from $static_bin (offline)"
  command -v buildah >/dev/null || die "buildah not found; run scripts/install-tools.sh"
  [ -x "$static_bin" ] || die "$static_bin is not an executable file"
  if command -v file >/dev/null && ! file -L "$static_bin" | grep -Eq 'statically linked|static-pie linked'; then
    file -L "$static_bin" >&2
    die "$static_bin is not statically linked: it would not run FROM scratch"
  fi
  # The context holds only the binary: nothing else is sent, and no .dockerignore applies.
  mkdir -p "$work/ctx"
  cp "$static_bin" "$work/ctx/rwop-guard"
  # vfs + chroot: no overlay mounts and no user namespaces needed (works in containers).
  export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
  image="localhost/rwop-guard:chart-checks-$$"
  buildah build --quiet --pull=never --layers=false --target prebuilt \
    --build-arg BINARY=rwop-guard -f "$repo/Dockerfile" -t "$image" "$work/ctx" >&2 \
    || die "buildah build"
  # shellcheck disable=SC2064 # expand now
  trap "buildah rmi '$image' >/dev/null 2>&1 || true; rm -rf '$work'" EXIT
  entrypoint="$(buildah inspect --type image --format '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}' "$image")"
  user="$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")"
  # shellcheck disable=SC2016 # a Go template, not shell
  ports="$(buildah inspect --type image --format '{{range $p, $_ := .OCIv1.Config.ExposedPorts}}{{$p}} {{end}}' "$image")"
  printf '   Entrypoint=%s User=%s ExposedPorts=%s\n' "$entrypoint" "$user" "$ports" >&2
  [ "$entrypoint" = 'rwop-guard serve ' ] || die "image Entrypoint is [$entrypoint], want [rwop-guard serve]"
  [ "$user" = "65532:65532" ] || die "image User is $user, want 65532:65532"
  case " $ports" in *" 8443/tcp "*) ;; *) die "image does not expose 8443/tcp" ;; esac
  case " $ports" in *" 9090/tcp "*) ;; *) die "image does not expose 9090/tcp" ;; esac
  # The binary must be where the entrypoint finds it, executable by the non-root user.
  container="$(buildah from --pull-never "$image")"
  mnt="$(buildah mount "$container")"
  [ -x "$mnt/usr/local/bin/rwop-guard" ] || { buildah rm "$container" >/dev/null; die "/usr/local/bin/rwop-guard missing or not executable"; }
  mode="$(stat -c '%a' "$mnt/usr/local/bin/rwop-guard")"
  buildah umount "$container" >/dev/null
  # Run it inside the image (chroot isolation works without a container runtime): proves the
  # binary needs nothing from a base image, as the image's user.
  if ! buildah run "$container" -- rwop-guard --help >"$work/run.log" 2>&1; then
    cat "$work/run.log" >&2
    buildah rm "$container" >/dev/null
    die "rwop-guard --help failed inside the image"
  fi
  buildah rm "$container" >/dev/null
  [ "$mode" = 755 ] || die "/usr/local/bin/rwop-guard has mode $mode, want 755"
  printf '   /usr/local/bin/rwop-guard (mode %s) runs in the image\n' "$mode" >&2
else
  step "image build skipped (pass a static binary or set RWOP_GUARD_STATIC_BIN)"
fi

printf '\nchart-checks: all checks passed\n' >&2
