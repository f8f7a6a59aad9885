"""Checks a krew plugin manifest the way krew does, and against the release archives it names.

    python krew-manifest-check.py MANIFEST ARCHIVE_DIR

krew's rules (sigs.k8s.io/krew, internal/index/validation: ValidatePlugin, validatePlatform,
validateSelector, validateFiles), restated here because krew is not installable from the package
registries this project may use:
  - apiVersion krew.googlecontainertools.github.com/v1alpha2, kind Plugin
  - metadata.name matches ^[\\w-]+$, is not a Windows device name, and equals the file's name
  - spec.shortDescription set, one line; spec.version a semantic version with a leading "v"
  - at least one platform; each with uri, a sha256 of 64 lower-case hex digits, bin, a selector
    that is neither empty nor uses keys other than os and arch, and `files` absent or non-empty
    with from/to set
Beyond krew's structural rules, against the archives in ARCHIVE_DIR:
  - each platform's uri ends in the name of an archive there, and its sha256 is that archive's
  - the archive holds `bin` as a regular, executable file, at a relative path without `..`
  - no two platforms select the same os/arch, and every selector names both
Exits 1 with one line per problem, 0 with a summary.
"""

import hashlib
import os
import re
import sys
import tarfile
from urllib.parse import urlparse

import yaml

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
SAFE_NAME = re.compile(r"^[\w-]+$")
WINDOWS_FORBIDDEN = {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {
    f"LPT{i}" for i in range(1, 10)
}
SHA256 = re.compile(r"^[a-f0-9]{64}$")
# krew's semver: a leading "v", then MAJOR.MINOR.PATCH with optional pre-release and build.
SEMVER = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
KNOWN_OS = {"linux", "darwin", "windows"}
KNOWN_ARCH = {"amd64", "arm64", "arm", "386", "ppc64le", "s390x"}


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_selector(sel, where, problems):
    if not isinstance(sel, dict):
        problems.append(f"{where}: nil selector is not supported")
        return None
    labels = sel.get("matchLabels")
    exprs = sel.get("matchExpressions")
    if labels is None and not exprs:
        problems.append(f"{where}: empty selector is not supported")
        return None
    keys = list((labels or {}).keys()) + [e.get("key") for e in (exprs or [])]
    for key in keys:
        if key not in ("os", "arch"):
            problems.append(f"{where}: selector key {key!r} not supported")
    if labels is not None and len(labels) == 0:
        problems.append(f"{where}: `matchLabels` specified but empty")
    if exprs is not None and len(exprs) == 0:
        problems.append(f"{where}: `matchExpressions` specified but empty")
    labels = labels or {}
    os_, arch = labels.get("os"), labels.get("arch")
    if os_ not in KNOWN_OS or arch not in KNOWN_ARCH:
        problems.append(f"{where}: selector must name a known os and arch, got {labels!r}")
        return None
    return (os_, arch)


def check_archive(path, bin_path, where, problems):
    if bin_path.startswith("/") or ".." in bin_path.split("/"):
        problems.append(f"{where}: bin {bin_path!r} must be a relative path inside the archive")
        return
    try:
        with tarfile.open(path, "r:gz") as tar:
            names = {m.name.lstrip("./"): m for m in tar.getmembers()}
    except (OSError, tarfile.TarError) as e:
        problems.append(f"{where}: cannot read {path}: {e}")
        return
    member = names.get(bin_path.lstrip("./"))
    if member is None:
        problems.append(f"{where}: bin {bin_path!r} is not in {os.path.basename(path)}")
    elif not member.isfile() or not member.mode & 0o111:
        problems.append(f"{where}: bin {bin_path!r} is not an executable regular file")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: krew-manifest-check.py MANIFEST ARCHIVE_DIR")
    manifest, archive_dir = sys.argv[1], sys.argv[2]
    with open(manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        sys.exit(f"{manifest}: want exactly one YAML document (a mapping)")
    p = docs[0]
    problems = []

    file_name = os.path.splitext(os.path.basename(manifest))[0]
    if p.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion is {p.get('apiVersion')!r}, want {API_VERSION!r}")
    if p.get("kind") != "Plugin":
        problems.append(f"kind is {p.get('kind')!r}, want 'Plugin'")
    name = (p.get("metadata") or {}).get("name") or ""
    if not SAFE_NAME.match(name) or name.upper() in WINDOWS_FORBIDDEN:
        problems.append(f"the plugin name {name!r} is not allowed, must match {SAFE_NAME.pattern}")
    if name != file_name:
        problems.append(f"plugin should be named {file_name!r} (the manifest's file name), not {name!r}")
    spec = p.get("spec") or {}
    short = spec.get("shortDescription") or ""
    if not short:
        problems.append("should have a short description")
    if "\r" in short or "\n" in short:
        problems.append("should not have line breaks in short description")
    version = spec.get("version") or ""
    if not version:
        problems.append("should have a version specified")
    elif not SEMVER.match(version):
        problems.append(f"version {version!r} is not a semantic version with a leading 'v'")
    platforms = spec.get("platforms") or []
    if not platforms:
        problems.append("should have a platform specified")

    seen = {}
    for i, pl in enumerate(platforms):
        where = f"platforms[{i}]"
        uri, digest, bin_path = pl.get("uri") or "", pl.get("sha256") or "", pl.get("bin") or ""
        for key, value in (("uri", uri), ("sha256", digest), ("bin", bin_path)):
            if not isinstance(value, str):
                # krew decodes these into strings: an unquoted all-digit sha256 is a number.
                problems.append(f"{where}: `{key}` must be a string, not {value!r}")
        uri, digest, bin_path = str(uri), str(digest), str(bin_path)
        if not uri:
            problems.append(f"{where}: `uri` has to be set")
        if not digest:
            problems.append(f"{where}: `sha256` sum has to be set")
        elif not SHA256.match(digest):
            problems.append(f"{where}: `sha256` value {digest} is not valid, must match {SHA256.pattern}")
        if not bin_path:
            problems.append(f"{where}: `bin` has to be set")
        files = pl.get("files")
        if files is not None:
            if len(files) == 0:
                problems.append(f"{where}: `files` has to be unspecified or non-empty")
            for op in files:
                if not op.get("from") or not op.get("to"):
                    problems.append(f"{where}: `files` entries need `from` and `to`")
        platform = check_selector(pl.get("selector"), where, problems)
        if platform in seen:
            problems.append(f"{where}: selects {platform} like platforms[{seen[platform]}]")
        elif platform:
            seen[platform] = i
        # Against the archives.
        archive = os.path.basename(urlparse(uri).path) if uri else ""
        path = os.path.join(archive_dir, archive)
        if not archive or not os.path.isfile(path):
            problems.append(f"{where}: uri {uri!r} names no archive in {archive_dir}")
            continue
        actual = sha256_of(path)
        if digest and actual != digest:
            problems.append(f"{where}: sha256 {digest} is not {archive}'s ({actual})")
        if bin_path:
            check_archive(path, bin_path, where, problems)

    if problems:
        for problem in problems:
            print(f"krew manifest {manifest}: {problem}", file=sys.stderr)
        sys.exit(1)
    print(
        f"   krew manifest {os.path.basename(manifest)}: plugin {name} {version}, platforms "
        + ", ".join(f"{o}/{a}" for o, a in seen)
        + "; uris and sha256 match the archives",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
