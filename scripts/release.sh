#!/usr/bin/env bash
# Builds the release artefacts of one version into one directory:
#
#   scripts/release.sh [--dry-run] [--out DIR] [--base-url URL] VERSION
#
#   rwop-guard-VERSION-linux-amd64.tar.gz   the static binary, LICENSE, THIRD-PARTY-LICENSES.txt
#   rwop-guard-VERSION-linux-arm64.tar.gz   (the license files of the crates in it), README.md,
#                                           CHANGELOG.md and docs/ (the README's pages); same
#                                           for aarch64
#   rwop-guard-VERSION-linux-amd64.cdx.json CycloneDX SBOM of each binary (its crates, for
#   rwop-guard-VERSION-linux-arm64.cdx.json its target; cargo-cyclonedx)
#   rwop-guard-VERSION.tgz                  the Helm chart (helm package)
#   rwop.yaml                               krew plugin manifest for `kubectl rwop`
#   rwop-guard-VERSION-checksums.txt        sha256 of every file above (sha256sum -c format)
#
# and checks them: each binary's --version names VERSION and the checked-out commit, the archives
# hold exactly the files above, the checksums verify, each SBOM describes its binary, the packaged
# chart carries its Artifact Hub annotations, and the krew manifest follows krew's rules, its URIs
# and sha256 match the archives, and the plugin starts as `kubectl rwop` from the unpacked archive
# the way krew installs it.
#
# VERSION must be the version in Cargo.toml and the chart (bump them first). The binaries are
# built with `cargo build --release` for x86_64-unknown-linux-musl and `cargo zigbuild --release`
# for aarch64-unknown-linux-musl (no-ops when scripts/test.sh has just built them).
#
#   --dry-run       write to a new temporary directory (removed at the end, unless --out is
#                   given or RWOP_RELEASE_KEEP=1) and allow a dirty tree: what CI runs
#   --out DIR       where to write (default: dist/VERSION; with --dry-run, a temporary directory)
#   --base-url URL  where the archives will be downloadable, for the krew manifest's URIs
#                   (default: $RWOP_RELEASE_BASE_URL, else
#                   https://github.com/example/rwop-guard/releases/download/vVERSION)
#
# Tools: cargo, cargo-zigbuild, cargo-cyclonedx, helm, kubectl, python3 with PyYAML, from
# scripts/install-tools.sh. Archives are reproducible: files sorted, owner root, mtime the
# commit's time, gzip without a timestamp.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${RWOP_TOOLS:-$HOME/.cache/rwop-guard/tools}"
export PATH="$tools/bin:$PATH"
cd "$repo"

die() { printf 'release: FAILED: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

dry_run=0 out="" base_url="${RWOP_RELEASE_BASE_URL:-}" version=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) out="${2:?--out needs a directory}"; shift ;;
    --out=*) out="${1#--out=}" ;;
    --base-url) base_url="${2:?--base-url needs a URL}"; shift ;;
    --base-url=*) base_url="${1#--base-url=}" ;;
    -h | --help) usage ;;
    -*) die "unknown option $1" ;;
    *) [ -z "$version" ] || die "one VERSION only"; version="$1" ;;
  esac
  shift
done
[ -n "$version" ] || usage
version="${version#v}"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "VERSION $version is not MAJOR.MINOR.PATCH[-PRE]"
base_url="${base_url:-https://github.com/example/rwop-guard/releases/download/v$version}"
base_url="${base_url%/}"

for tool in cargo cargo-zigbuild cargo-cyclonedx helm kubectl jq sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found; run scripts/install-tools.sh"
done
python="$tools/venv/bin/python"
[ -x "$python" ] || die "$python not found; run scripts/install-tools.sh"

# --- the version is the one everything says --------------------------------------------------
step "version $version: Cargo.toml, Chart.yaml, CHANGELOG.md"
cargo_version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
[ "$cargo_version" = "$version" ] || die "Cargo.toml says $cargo_version, not $version (bump it first)"
chart_yaml=charts/rwop-guard/Chart.yaml
chart_version="$(sed -n 's/^version: *//p' "$chart_yaml")"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart_yaml")"
[ "$chart_version" = "$version" ] || die "$chart_yaml version is $chart_version, not $version"
[ "$app_version" = "$version" ] || die "$chart_yaml appVersion is $app_version, not $version"
grep -q "^## \[$version\]" CHANGELOG.md || die "CHANGELOG.md has no '## [$version]' section"

commit="$(git rev-parse HEAD 2>/dev/null)" || die "not a git checkout: a release names its commit"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  [ "$dry_run" = 1 ] || die "the tree has uncommitted changes (a release is built from a commit)"
  printf '   the tree has uncommitted changes (allowed in a dry run)\n' >&2
fi
# Reproducible archives: every file's mtime is the commit's time.
epoch="$(git log -1 --format=%ct HEAD)"

remove_out=0
if [ -z "$out" ]; then
  if [ "$dry_run" = 1 ]; then
    out="$(mktemp -d)"
    # A dry run leaves nothing behind, unless RWOP_RELEASE_KEEP=1 (to look at the artefacts).
    [ "${RWOP_RELEASE_KEEP:-0}" = 1 ] || remove_out=1
  else
    out="$repo/dist/$version"
  fi
fi
mkdir -p "$out"
[ -z "$(ls -A "$out")" ] || die "$out is not empty"
out="$(cd "$out" && pwd)"
stage="$(mktemp -d)"
cleanup() {
  rm -rf "$stage"
  if [ "$remove_out" = 1 ]; then rm -rf "$out"; fi
}
trap cleanup EXIT

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"

# platform (krew/OCI name) -> Rust target; the builder for each.
platforms=(amd64 arm64)
declare -A triple=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
declare -A build=([amd64]=build [arm64]=zigbuild)
declare -A runner=([amd64]="" [arm64]=qemu-aarch64-static)

for arch in "${platforms[@]}"; do
  t="${triple[$arch]}"
  step "binary linux/$arch: cargo ${build[$arch]} --release --target $t"
  cargo "${build[$arch]}" --locked --release --target "$t" >&2 || die "cargo ${build[$arch]} ($t)"
  bin="$CARGO_TARGET_DIR/$t/release/rwop-guard"
  file -L "$bin" | grep -Eq 'statically linked|static-pie linked' || die "$bin is not static"
  run=("$bin")
  if [ -n "${runner[$arch]}" ] && [ "$(uname -m)" != aarch64 ]; then
    command -v "${runner[$arch]}" >/dev/null || die "${runner[$arch]} not found; run scripts/install-tools.sh"
    run=("${runner[$arch]}" "$bin")
  fi
  stamp="$("${run[@]}" --version)" || die "$bin --version failed"
  printf '   %s\n' "$stamp" >&2
  case "$stamp" in
    "rwop-guard $version (commit $commit)" | "rwop-guard $version (commit $commit, dirty)") ;;
    *) die "$bin says [$stamp], want version $version built from commit $commit" ;;
  esac

  name="rwop-guard-$version-linux-$arch"
  step "SBOM linux/$arch: cargo cyclonedx --target $t"
  # cargo-cyclonedx reads `cargo metadata` (no build) and writes next to Cargo.toml, as
  # <binary>_bin.cdx.json (.gitignore'd); the file is moved out at once.
  rm -f rwop-guard_bin.cdx.json
  cargo cyclonedx --quiet --format json --spec-version 1.5 --describe binaries \
    --no-build-deps --target "$t" >&2 || die "cargo cyclonedx ($t)"
  sbom="$stage/$name.cdx.json"
  mv rwop-guard_bin.cdx.json "$sbom" 2>/dev/null || die "cargo cyclonedx wrote no rwop-guard_bin.cdx.json"
  cp "$sbom" "$out/$name.cdx.json"
  # The SBOM describes this binary: our name and version, CycloneDX 1.5, and the crates that
  # are compiled into it for this target (ring and rustls among them, each with a license).
  jq -e --arg v "$version" '
      .bomFormat == "CycloneDX" and .specVersion == "1.5"
      and .metadata.component.name == "rwop-guard" and .metadata.component.version == $v
      and ([.components[] | select(.name == "rustls" or .name == "ring")] | length) == 2
      and ([.components[] | select((.licenses // []) | length == 0)] | length) == 0
      and ([.components[] | select(.name == "criterion" or .name == "proptest")] | length) == 0
    ' "$out/$name.cdx.json" >/dev/null || die "$name.cdx.json does not describe the binary"
  printf '   %s components, e.g. %s\n' "$(jq '.components | length' "$out/$name.cdx.json")" \
    "$(jq -r '[.components[] | select(.name == "ring")][0] | "\(.purl) (\(.licenses[0].expression // .licenses[0].license.id))"' "$out/$name.cdx.json")" >&2

  step "THIRD-PARTY-LICENSES.txt linux/$arch: the license files of the crates in the SBOM"
  cargo metadata --format-version 1 --locked --filter-platform "$t" >"$stage/metadata-$arch.json" \
    || die "cargo metadata ($t)"
  mkdir -p "$stage/$name"
  "$python" "$repo/scripts/third-party-licenses.py" "$out/$name.cdx.json" "$stage/metadata-$arch.json" \
    "$stage/$name/THIRD-PARTY-LICENSES.txt" || die "THIRD-PARTY-LICENSES.txt ($t)"
  chmod 0644 "$stage/$name/THIRD-PARTY-LICENSES.txt"

  step "archive $name.tar.gz"
  install -m 0755 "$bin" "$stage/$name/rwop-guard"
  install -m 0644 LICENSE README.md CHANGELOG.md "$stage/$name/"
  # The README links to its pages under docs/: they travel with it.
  cp -R docs "$stage/$name/docs"
  find "$stage/$name/docs" -type d -exec chmod 0755 {} +
  find "$stage/$name/docs" -type f -exec chmod 0644 {} +
  # Files at the archive's top level: `tar -xzf` gives ./rwop-guard, and krew's `bin` is
  # `rwop-guard`.
  (cd "$stage/$name" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    --format=gnu -cf - rwop-guard LICENSE THIRD-PARTY-LICENSES.txt README.md CHANGELOG.md docs) \
    | gzip -9 -n >"$out/$name.tar.gz"
  listing="$(tar -tzvf "$out/$name.tar.gz" | awk '{print $1, $2, $6}' | sort)"
  want="$( {
    printf '%s\n' '-rw-r--r-- 0/0 CHANGELOG.md' '-rw-r--r-- 0/0 LICENSE' \
      '-rw-r--r-- 0/0 README.md' '-rw-r--r-- 0/0 THIRD-PARTY-LICENSES.txt' \
      '-rwxr-xr-x 0/0 rwop-guard'
    find docs -type d | sed 's|^|drwxr-xr-x 0/0 |; s|$|/|'
    find docs -type f | sed 's|^|-rw-r--r-- 0/0 |'
  } | sort)"
  [ "$listing" = "$want" ] || { printf '%s\n' "$listing" >&2; die "$name.tar.gz holds other files or modes"; }
  cmp -s "$bin" <(tar -xzOf "$out/$name.tar.gz" rwop-guard) || die "$name.tar.gz: binary differs from $bin"

done

# --- the chart ----------------------------------------------------------------------------------
step "helm package charts/rwop-guard"
helm package charts/rwop-guard --version "$version" --app-version "$version" -d "$out" >&2 \
  || die "helm package"
chart_tgz="$out/rwop-guard-$version.tgz"
[ -f "$chart_tgz" ] || die "helm package wrote no $chart_tgz"
helm show chart "$chart_tgz" >"$stage/Chart.yaml" || die "helm show chart"
"$python" - "$stage/Chart.yaml" "$version" <<'PY' || die "the packaged chart's Artifact Hub annotations"
import sys, yaml
chart = yaml.safe_load(open(sys.argv[1]))
version = sys.argv[2]
ann = chart.get("annotations") or {}
def need(cond, what):
    if not cond:
        sys.exit(f"Chart.yaml: {what}")
need(ann.get("artifacthub.io/license") == "Apache-2.0", "artifacthub.io/license is not Apache-2.0")
need(ann.get("artifacthub.io/category") in {"security", "storage"}, "artifacthub.io/category")
changes = yaml.safe_load(ann.get("artifacthub.io/changes") or "[]")
need(isinstance(changes, list) and changes, "artifacthub.io/changes is not a non-empty list")
for c in changes:
    need(c.get("kind") in {"added", "changed", "deprecated", "removed", "fixed", "security"}
         and c.get("description"), f"artifacthub.io/changes entry {c!r}")
images = yaml.safe_load(ann.get("artifacthub.io/images") or "[]")
need(isinstance(images, list) and len(images) == 1, "artifacthub.io/images has not one image")
image = images[0]
need(image.get("image", "").endswith(f":{version}"), f"artifacthub.io/images: {image.get('image')} is not tagged {version}")
need(sorted(image.get("platforms") or []) == ["linux/amd64", "linux/arm64"],
     "artifacthub.io/images platforms are not linux/amd64 and linux/arm64")
links = yaml.safe_load(ann.get("artifacthub.io/links") or "[]")
need(all(l.get("name") and l.get("url") for l in links), "artifacthub.io/links entries need name and url")
print(f"   {chart['name']} {chart['version']} (app {chart['appVersion']}): "
      f"{len(changes)} changes, image {image['image']} for {', '.join(image['platforms'])}",
      file=sys.stderr)
PY

# --- the krew manifest ----------------------------------------------------------------------------
step "krew manifest rwop.yaml (plugin rwop, $base_url)"
{
  cat <<EOF
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: rwop
spec:
  version: v$version
  homepage: ${RWOP_HOMEPAGE:-https://github.com/example/rwop-guard}
  shortDescription: Find and migrate volumes to ReadWriteOncePod safely
  description: |
    rwop-guard as a kubectl plugin. \`kubectl rwop scan\` reports PersistentVolumes and claims
    that break the ReadWriteOncePod rules, claims that could move to ReadWriteOncePod, and
    workloads that could not roll with it. \`kubectl rwop migrate NAMESPACE/CLAIM\` moves a
    claim's volume from ReadWriteOnce to ReadWriteOncePod step by step, resumable and
    reversible. \`kubectl rwop check -f\` lints manifests offline.
  caveats: |
    scan and migrate read (and migrate writes) PersistentVolumes, claims and workloads with
    your kubeconfig's credentials. Run \`kubectl rwop migrate --dry-run\` first.
  platforms:
EOF
  for arch in "${platforms[@]}"; do
    archive="rwop-guard-$version-linux-$arch.tar.gz"
    cat <<EOF
  - selector:
      matchLabels:
        os: linux
        arch: $arch
    uri: $base_url/$archive
    sha256: "$(sha256sum "$out/$archive" | cut -d' ' -f1)"
    bin: rwop-guard
EOF
  done
} >"$out/rwop.yaml"
"$python" "$repo/scripts/krew-manifest-check.py" "$out/rwop.yaml" "$out" || die "krew manifest"

# As krew installs it: unpack the archive for this machine, link kubectl-rwop to `bin`, and let
# kubectl find the plugin on PATH. kubectl runs it with argv[0] = .../kubectl-rwop, which is how
# the binary knows to present itself as `kubectl rwop`.
host_arch=amd64
[ "$(uname -m)" = aarch64 ] && host_arch=arm64
plugin_dir="$stage/krew-bin"
mkdir -p "$plugin_dir" "$stage/krew-store"
tar -xzf "$out/rwop-guard-$version-linux-$host_arch.tar.gz" -C "$stage/krew-store"
ln -s "$stage/krew-store/rwop-guard" "$plugin_dir/kubectl-rwop"
PATH="$plugin_dir:$PATH" kubectl plugin list 2>/dev/null | grep -q "$plugin_dir/kubectl-rwop" \
  || die "kubectl plugin list does not find kubectl-rwop"
plugin_version="$(PATH="$plugin_dir:$PATH" kubectl rwop --version)" || die "kubectl rwop --version"
case "$plugin_version" in
  *" $version (commit $commit"*) ;;
  *) die "kubectl rwop --version printed [$plugin_version]" ;;
esac
PATH="$plugin_dir:$PATH" kubectl rwop --help >"$stage/help.txt" 2>&1 || die "kubectl rwop --help"
grep -q '^Usage: kubectl rwop ' "$stage/help.txt" || { cat "$stage/help.txt" >&2; die "kubectl rwop --help does not say 'Usage: kubectl rwop'"; }
printf '   kubectl rwop --version: %s\n' "$plugin_version" >&2

# --- checksums ------------------------------------------------------------------------------------
step "checksums"
(cd "$out" && sha256sum -- *.tar.gz *.cdx.json *.tgz rwop.yaml >"rwop-guard-$version-checksums.txt")
(cd "$out" && sha256sum --check --strict --quiet "rwop-guard-$version-checksums.txt") || die "checksums do not verify"
[ "$(wc -l <"$out/rwop-guard-$version-checksums.txt")" = 6 ] || die "the checksums file does not list the 6 artefacts"

step "release $version from $commit in $out"
for f in "$out"/*; do printf '   %10s  %s\n' "$(stat -c %s "$f")" "${f##*/}" >&2; done
printf '\nrelease: %s artefacts written%s\n' "$version" "$([ "$dry_run" = 1 ] && echo ' (dry run)')" >&2
