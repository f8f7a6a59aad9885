"""Writes the license texts of the crates compiled into one binary, for its release archive.

    python third-party-licenses.py SBOM CARGO_METADATA OUT

SBOM is the binary's CycloneDX SBOM (cargo cyclonedx, one target): the crates in the binary.
CARGO_METADATA is `cargo metadata --format-version 1` output: where each crate's source is.
OUT gets, per crate (sorted by name), its name, version and SPDX license expression, then the
text of every license, copying, notice or copyright file at the top of its source: the MIT,
BSD and ISC licenses ask that their notice goes with every copy, binaries included.

A crate whose source has no such file is listed with its expression and counted on stderr. A
crate in the SBOM that cargo metadata does not know is an error (the two disagree).
"""

import json
import os
import re
import sys

LICENSE_FILE = re.compile(r"^(licen[cs]e|copying|notice|copyright|unlicense)", re.IGNORECASE)


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: third-party-licenses.py SBOM CARGO_METADATA OUT")
    with open(sys.argv[1]) as f:
        sbom = json.load(f)
    with open(sys.argv[2]) as f:
        metadata = json.load(f)
    packages = {(p["name"], p["version"]): p for p in metadata["packages"]}
    own = sbom["metadata"]["component"]

    sections, without_files = [], []
    components = sorted(sbom.get("components", []), key=lambda c: (c["name"], c["version"]))
    for c in components:
        package = packages.get((c["name"], c["version"]))
        if package is None:
            sys.exit(f"{c['name']} {c['version']} is in the SBOM but not in cargo metadata")
        directory = os.path.dirname(package["manifest_path"])
        names = sorted(
            n for n in os.listdir(directory)
            if LICENSE_FILE.match(n) and os.path.isfile(os.path.join(directory, n))
        )
        declared = package.get("license_file")
        if declared and os.path.basename(declared) not in names:
            names.append(declared)
        expression = package.get("license") or "(see the license file)"
        text = [f"{'=' * 78}\n{c['name']} {c['version']}: {expression}\n{'=' * 78}\n"]
        if not names:
            without_files.append(f"{c['name']} {c['version']}")
            text.append(
                f"The crate's source has no license file; {expression} applies "
                f"(https://spdx.org/licenses/).\n"
            )
        for name in names:
            with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
                body = f.read().rstrip()
            text.append(f"--- {name} ---\n{body}\n")
        sections.append("\n".join(text))

    with open(sys.argv[3], "w") as out:
        out.write(
            f"Third-party software in {own['name']} {own['version']}\n\n"
            f"The {len(components)} crates below are compiled into this binary. Each is "
            f"distributed under the license(s) named, whose texts follow as the crate ships "
            f"them.\n\n"
        )
        out.write("\n".join(sections))
    print(
        f"   {len(components)} crates, {len(components) - len(without_files)} with license files"
        + (f"; without: {', '.join(without_files)}" if without_files else ""),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
