#!/usr/bin/env python3
"""CycloneDX 1.5 SBOMs for a Conduit release, and their validation against the CycloneDX schema.

  sbom.py binary --binary BIN --out FILE [--created EPOCH]
      The binary's dependencies, read from the binary itself: `cargo auditable` embeds the exact
      resolved dependency tree in a `.dep-v0` section, so the SBOM lists what was compiled in —
      not what Cargo.toml allows. Licences and crates.io checksums come from `cargo metadata` and
      Cargo.lock. Build-only dependencies (build scripts, proc macros) are listed with scope
      `excluded`: they ran at build time and are not in the binary.
  sbom.py image --contents image-contents.json --binary-sbom FILE --out FILE
      The image: every Debian package with every file it put in the image (path, SHA-256), and
      Conduit's binary with its crates nested, so the image SBOM alone is complete.
  sbom.py validate FILE...
      Strict validation against the CycloneDX 1.5 JSON schema (cyclonedx-python-lib's copy of
      it, so no network) — exit 1 naming the file and the first error.

Deterministic: the same inputs give the same bytes (serial numbers are UUIDv5 of the subject).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import uuid
import zlib
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
SPEC = "1.5"
TOOL = {"type": "application", "name": "conduit deploy/sbom.py", "version": "1"}


def fail(msg: str) -> None:
    print(f"sbom: {msg}", file=sys.stderr)
    sys.exit(1)


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def audit_data(binary: Path) -> dict:
    """The dependency tree `cargo auditable` embedded (zlib-compressed JSON in `.dep-v0`)."""
    with tempfile.TemporaryDirectory() as tmp:
        section, discard = Path(tmp) / "dep-v0", Path(tmp) / "discard"
        r = subprocess.run(["objcopy", f"--dump-section=.dep-v0={section}", str(binary), str(discard)],
                           capture_output=True, text=True)
        if r.returncode != 0 or not section.exists():
            fail(f"{binary} has no .dep-v0 section: build it with `cargo auditable build` ({r.stderr.strip()})")
        return json.loads(zlib.decompress(section.read_bytes()))


def spdx(expr: str | None) -> str | None:
    """Cargo's licence field as an SPDX expression (old `MIT/Apache-2.0` means OR)."""
    if not expr:
        return None
    return re.sub(r"\s*/\s*", " OR ", expr.strip())


def crate_purl(name: str, version: str, source: str) -> str:
    if source == "crates.io":
        return f"pkg:cargo/{name}@{version}"
    return f"pkg:generic/{quote(name)}@{quote(version)}"


def binary_sbom(a: argparse.Namespace) -> dict:
    data = audit_data(a.binary)
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", "x86_64-unknown-linux-gnu"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout)
    licences = {(p["name"], p["version"]): p for p in meta["packages"]}
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    checksums = {(p["name"], p["version"]): p.get("checksum") for p in lock["package"]}
    packages = data["packages"]
    roots = [i for i, p in enumerate(packages) if p.get("root")]
    if len(roots) != 1:
        fail(f"expected one root package in the audit data, found {len(roots)}")
    root = packages[roots[0]]
    binary_bytes = a.binary.read_bytes()

    def ref(p: dict) -> str:
        return crate_purl(p["name"], p["version"], p.get("source", ""))

    components = []
    for p in packages:
        if p is root:
            continue
        info = licences.get((p["name"], p["version"]), {})
        c: dict = {
            "type": "library",
            "bom-ref": ref(p),
            "name": p["name"],
            "version": p["version"],
            "purl": ref(p),
            "scope": "excluded" if p.get("kind") == "build" else "required",
        }
        if info.get("description"):
            c["description"] = " ".join(info["description"].split())
        if lic := spdx(info.get("license")):
            c["licenses"] = [{"expression": lic}]
        if sum_ := checksums.get((p["name"], p["version"])):
            c["hashes"] = [{"alg": "SHA-256", "content": sum_}]
        if info.get("repository"):
            c["externalReferences"] = [{"type": "vcs", "url": info["repository"]}]
        if p.get("kind") == "build":
            c["properties"] = [{"name": "cdx:cargo:dependency_kind", "value": "build"}]
        components.append(c)
    root_ref = f"pkg:generic/conduit@{root['version']}"
    deps = []
    for p in packages:
        deps.append({
            "ref": root_ref if p is root else ref(p),
            "dependsOn": sorted({ref(packages[i]) for i in p.get("dependencies", [])}),
        })
    digest = hashlib.sha256(binary_bytes).hexdigest()
    root_info = licences.get((root["name"], root["version"]), {})
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC,
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'conduit-binary:' + digest)}",
        "version": 1,
        "metadata": {
            "timestamp": iso(a.created),
            "tools": {"components": [TOOL]},
            "component": {
                "type": "application",
                "bom-ref": root_ref,
                "name": "conduit",
                "version": root["version"],
                "purl": root_ref,
                "licenses": [{"expression": spdx(root_info.get("license")) or "NOASSERTION"}],
                "hashes": [{"alg": "SHA-256", "content": digest}],
            },
        },
        "components": sorted(components, key=lambda c: c["bom-ref"]),
        "dependencies": sorted(deps, key=lambda d: d["ref"]),
    }


def deb_purl(p: dict, distro: str) -> str:
    arch = "all" if p["name"] == "ca-certificates" else "amd64"
    return f"pkg:deb/debian/{p['name']}@{quote(p['version'], safe='')}?arch={arch}&distro={distro}"


def image_sbom(a: argparse.Namespace) -> dict:
    contents = json.loads(a.contents.read_text())
    binary = json.loads(a.binary_sbom.read_text())
    image = contents["image"]
    files_by_pkg: dict[str, list[dict]] = {}
    for f in contents["files"]:
        if f["kind"] == "dir":
            continue
        files_by_pkg.setdefault(f["package"], []).append(f)

    def file_component(f: dict) -> dict:
        c: dict = {"type": "file", "bom-ref": "file:" + f["path"], "name": f["path"]}
        if "sha256" in f:
            c["hashes"] = [{"alg": "SHA-256", "content": f["sha256"]}]
        props = [{"name": "conduit:file:mode", "value": f["mode"]}, {"name": "conduit:file:owner", "value": f["owner"]}]
        if "target" in f:
            props.append({"name": "conduit:file:symlink_target", "value": f["target"]})
        c["properties"] = props
        return c

    components = []
    for p in contents["packages"]:
        purl = deb_purl(p, contents["distro"])
        c: dict = {
            "type": "library",
            "bom-ref": purl,
            "supplier": {"name": "Debian", "url": ["https://www.debian.org"]},
            "name": p["name"],
            "version": p["version"],
            "purl": purl,
            "licenses": [{"expression": p["license"]}],
            "hashes": [{"alg": "SHA-256", "content": p["deb_sha256"]}],
            "components": [file_component(f) for f in files_by_pkg.get(p["name"], [])],
            "properties": [{"name": "conduit:deb:source", "value": p["source"]}],
        }
        if p["description"]:
            c["description"] = p["description"]
        components.append(c)
    app = dict(binary["metadata"]["component"])
    app["components"] = binary["components"] + [file_component(f) for f in files_by_pkg.get("conduit", [])]
    components.append(app)
    unattributed = [f["path"] for f in contents["files"]
                    if f["kind"] != "dir" and f["package"] not in {p["name"] for p in contents["packages"]} | {"conduit"}]
    if unattributed:
        fail(f"files with no package: {unattributed}")
    image_ref = f"pkg:oci/conduit@{quote(image['digest'], safe='')}?tag={quote(image['version'])}"
    deps = [{"ref": image_ref, "dependsOn": sorted(c["bom-ref"] for c in components)}]
    deps += binary["dependencies"]
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC,
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'conduit-image:' + image['digest'])}",
        "version": 1,
        "metadata": {
            "timestamp": image["created"],
            "tools": {"components": [TOOL]},
            "component": {
                "type": "container",
                "bom-ref": image_ref,
                "name": "conduit",
                "version": image["version"],
                "purl": image_ref,
                "hashes": [{"alg": "SHA-256", "content": image["digest"].removeprefix("sha256:")}],
                "properties": [{"name": "org.opencontainers.image.revision", "value": image["revision"]}],
            },
        },
        "components": components,
        "dependencies": sorted(deps, key=lambda d: d["ref"]),
    }


def validate(files: list[Path]) -> None:
    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError:
        fail("validation needs cyclonedx-python-lib[json-validation] (pip); .ci/run installs it")
    validator = JsonStrictValidator(SchemaVersion.V1_5)
    for f in files:
        error = validator.validate_str(f.read_text())
        if error is not None:
            fail(f"{f} is not valid CycloneDX {SPEC}: {error}")
        bom = json.loads(f.read_text())
        n = len(bom.get("components", []))
        print(f"{f.name}: valid CycloneDX {SPEC} ({n} top-level components)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("binary")
    b.add_argument("--binary", required=True, type=Path)
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--created", type=int, default=0)
    i = sub.add_parser("image")
    i.add_argument("--contents", required=True, type=Path)
    i.add_argument("--binary-sbom", required=True, type=Path)
    i.add_argument("--out", required=True, type=Path)
    v = sub.add_parser("validate")
    v.add_argument("files", nargs="+", type=Path)
    a = ap.parse_args()
    if a.cmd == "validate":
        return validate(a.files)
    bom = binary_sbom(a) if a.cmd == "binary" else image_sbom(a)
    a.out.write_text(json.dumps(bom, indent=1, ensure_ascii=False) + "\n")
    print(f"{a.out}: {len(bom['components'])} top-level components")


if __name__ == "__main__":
    main()
