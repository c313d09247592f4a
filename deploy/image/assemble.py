#!/usr/bin/env python3
"""Assembles Conduit's container image as an OCI archive, from Debian packages and the binary.

Why a script and not buildah or a Dockerfile: the image holds a dozen files (a glibc loader and the
libraries the binary links, a CA bundle, three /etc files, the binary), so it is written directly
as OCI layers — no daemon, no privileges, no network beyond Debian's mirror for the .debs, and
byte-for-byte reproducible: entries in name order, one timestamp (the commit's), root-owned,
gzip without a name or time. The same binary and .debs give the same image digest (with the same
Python zlib: another zlib may compress differently).

Output (in --out):
  oci/                         an OCI image layout (index.json, oci-layout, blobs/sha256/…)
  conduit-VERSION.oci.tar      that layout as one archive, with a Docker `manifest.json` beside it,
                               so `docker load`, `podman load` and `skopeo copy oci-archive:` take it
  image-contents.json          every file in the image with its package, size, mode and SHA-256 (the
                               image SBOM is made from it: deploy/sbom.py)

Refuses (exit 1, with the reason) when a library the binary needs is not among the kept files.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from oci import canonical, layout_files, sha, write_archive  # noqa: E402
UID = GID = 65532
DATA_DIR = "var/lib/conduit"
BINARY_PATH = "usr/local/bin/conduit"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
ARCH = "amd64"


@dataclass
class Entry:
    """One tar entry: a file, a directory or a symlink."""

    path: str  # relative to /, no leading slash
    kind: str  # "file" | "dir" | "symlink"
    mode: int
    data: bytes = b""
    target: str = ""
    uid: int = 0
    gid: int = 0
    package: str = ""  # the Debian package it came from, or "conduit"


@dataclass
class Package:
    name: str
    license: str
    keep: list[str]
    version: str = ""
    control: dict[str, str] = field(default_factory=dict)
    deb_sha256: str = ""


def fail(msg: str) -> None:
    print(f"assemble: {msg}", file=sys.stderr)
    sys.exit(1)


def read_packages() -> list[Package]:
    pkgs = []
    for line in (HERE / "packages.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cols = re.split(r"\s{2,}", line.strip())
        if len(cols) != 3:
            fail(f"packages.txt: expected PACKAGE  LICENSE  FILES, got {line!r}")
        keep = [] if cols[2] == "-" else cols[2].split()
        pkgs.append(Package(cols[0], cols[1], keep))
    return pkgs


def fetch_debs(pkgs: list[Package], debs: Path) -> dict[str, Path]:
    """The .deb of each package: taken from `debs` if there, else `apt-get download`ed into it."""
    debs.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    missing = []
    for p in pkgs:
        hits = sorted(debs.glob(f"{p.name}_*_{ARCH}.deb")) + sorted(debs.glob(f"{p.name}_*_all.deb"))
        if hits:
            found[p.name] = hits[-1]
        else:
            missing.append(p.name)
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True, stderr=subprocess.DEVNULL)
        return fetch_debs(pkgs, debs)
    return found


def deb_entries(p: Package, deb: Path, scratch: Path) -> list[Entry]:
    """The kept files of one package, plus its copyright file and dpkg status entry."""
    p.deb_sha256 = hashlib.sha256(deb.read_bytes()).hexdigest()
    control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout
    p.control = parse_control(control)
    p.version = p.control["Version"]
    root = scratch / p.name
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    out: list[Entry] = []

    def take(rel: str) -> None:
        src = root / rel
        if src.is_symlink():
            out.append(Entry(rel, "symlink", 0o777, target=os.readlink(src), package=p.name))
        elif src.is_file():
            out.append(Entry(rel, "file", src.stat().st_mode & 0o755, src.read_bytes(), package=p.name))

    everything = sorted(str(f.relative_to(root)) for f in root.rglob("*") if not f.is_dir() or f.is_symlink())
    for pattern in p.keep:
        hits = [f for f in everything if fnmatch.fnmatchcase(f, pattern)]
        if not hits:
            fail(f"packages.txt keeps {pattern!r} from {p.name} {p.version}, which ships no such file")
        for f in hits:
            take(f)
    copyright_file = f"usr/share/doc/{p.name}/copyright"
    if (root / copyright_file).is_file() and not (root / copyright_file).is_symlink():
        take(copyright_file)
    if p.name == "ca-certificates":
        certs = sorted((root / "usr/share/ca-certificates/mozilla").glob("*.crt"))
        if not certs:
            fail("ca-certificates ships no Mozilla roots")
        bundle = b"".join(c.read_bytes().rstrip(b"\n") + b"\n" for c in certs)
        out.append(Entry(CA_BUNDLE, "file", 0o644, bundle, package=p.name))
    # A dpkg status entry per package, as distroless images carry, so scanners (trivy, grype)
    # see exactly which packages and which of their files are present.
    kept = [e for e in out if e.kind == "file"]
    status = control.rstrip("\n") + "\nStatus: install ok installed\n"
    md5sums = "".join(f"{hashlib.md5(e.data).hexdigest()}  {e.path}\n" for e in kept)
    out.append(Entry(f"var/lib/dpkg/status.d/{p.name}", "file", 0o644, status.encode(), package=p.name))
    out.append(Entry(f"var/lib/dpkg/status.d/{p.name}.md5sums", "file", 0o644, md5sums.encode(), package=p.name))
    return out


def parse_control(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and last:
            fields[last] += "\n" + line
        elif ":" in line:
            last, _, value = line.partition(":")
            fields[last] = value.strip()
    return fields


def needed_libraries(binary: Path) -> list[str]:
    dynamic = subprocess.run(["readelf", "-d", str(binary)], check=True, capture_output=True, text=True).stdout
    libs = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    interp = subprocess.run(["readelf", "-l", str(binary)], check=True, capture_output=True, text=True).stdout
    m = re.search(r"Requesting program interpreter: (\S+)\]", interp)
    return libs + ([m.group(1)] if m else [])


def check_links(binary: Path, entries: list[Entry]) -> None:
    present = {"/" + e.path for e in entries}
    for lib in needed_libraries(binary):
        if lib.startswith("/"):
            ok = lib in present
        else:
            ok = any(f"{d}/{lib}" in present for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"))
        if not ok:
            fail(f"the binary needs {lib}, which no line of packages.txt keeps; add it there")


def with_parents(entries: list[Entry]) -> list[Entry]:
    """Every parent directory as an explicit root-owned 0755 entry, then all in path order."""
    dirs = {e.path for e in entries if e.kind == "dir"}
    extra = []
    for e in entries:
        parts = e.path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                extra.append(Entry(d, "dir", 0o755))
    return sorted(entries + extra, key=lambda e: e.path)


def layer(entries: list[Entry], mtime: int) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip of it): reproducible — fixed order, owners, times, no gzip name."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in with_parents(entries):
            info = tarfile.TarInfo(e.path + ("/" if e.kind == "dir" else ""))
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, e.uid, e.gid, "", ""
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=9) as z:
        z.write(tar_bytes)
    return tar_bytes, gz.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True, type=Path)
    ap.add_argument("--debs", required=True, type=Path, help="where the .debs are kept (downloaded if absent)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--version", required=True)
    ap.add_argument("--revision", required=True)
    ap.add_argument("--created", required=True, type=int, help="seconds since the epoch (the commit's time)")
    ap.add_argument("--source", required=True)
    ap.add_argument("--license", required=True)
    a = ap.parse_args()

    pkgs = read_packages()
    debs = fetch_debs(pkgs, a.debs)
    with tempfile.TemporaryDirectory() as scratch:
        os_entries = [e for p in pkgs for e in deb_entries(p, debs[p.name], Path(scratch))]
    etc = HERE / "rootfs/etc"
    for f in sorted(etc.iterdir()):
        os_entries.append(Entry(f"etc/{f.name}", "file", 0o644, f.read_bytes(), package="conduit"))
    os_entries.append(Entry("tmp", "dir", 0o1777, package="conduit"))

    app_entries = [
        Entry(BINARY_PATH, "file", 0o755, a.binary.read_bytes(), package="conduit"),
        Entry(DATA_DIR, "dir", 0o700, uid=UID, gid=GID, package="conduit"),
    ]
    check_links(a.binary, os_entries + app_entries)

    created = datetime.fromtimestamp(a.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    layers = [layer(os_entries, a.created), layer(app_entries, a.created)]
    annotations = {
        "org.opencontainers.image.title": "conduit",
        "org.opencontainers.image.description": "Conduit: the gateway between AI coding tools and model providers",
        "org.opencontainers.image.version": a.version,
        "org.opencontainers.image.revision": a.revision,
        "org.opencontainers.image.source": a.source,
        "org.opencontainers.image.licenses": a.license,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.base.name": "scratch",
    }
    config = {
        "created": created,
        "architecture": ARCH,
        "os": "linux",
        "config": {
            "User": f"{UID}:{GID}",
            "Env": [
                "PATH=/usr/local/bin",
                "SSL_CERT_FILE=/" + CA_BUNDLE,
                "CONDUIT_LISTEN=0.0.0.0:8080",
                "CONDUIT_ADMIN_LISTEN=0.0.0.0:8081",
                "CONDUIT_DATA_DIR=/" + DATA_DIR,
                "CONDUIT_LOG_FORMAT=json",
            ],
            "Entrypoint": ["/" + BINARY_PATH],
            "Cmd": ["serve"],
            "WorkingDir": "/" + DATA_DIR,
            "ExposedPorts": {"8080/tcp": {}, "8081/tcp": {}},
            "Volumes": {"/" + DATA_DIR: {}},
            "StopSignal": "SIGTERM",
            "Labels": annotations,
            # Docker reads this from the image; Compose and Kubernetes set their own probes.
            "Healthcheck": {
                "Test": ["CMD", "/" + BINARY_PATH, "healthcheck"],
                "Interval": 10_000_000_000,
                "Timeout": 5_000_000_000,
                "StartPeriod": 30_000_000_000,
                "Retries": 3,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [sha(t) for t, _ in layers]},
        "history": [
            {"created": created, "created_by": "deploy/image/assemble.py: files kept from "
             + ", ".join(f"{p.name} {p.version}" for p in pkgs) + "; /etc/passwd, group, nsswitch.conf"},
            {"created": created, "created_by": f"deploy/image/assemble.py: conduit {a.version} ({a.revision})"},
        ],
    }
    config_bytes = canonical(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(gz), "size": len(gz)}
                   for _, gz in layers],
        "annotations": annotations,
    }
    manifest_bytes = canonical(manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(manifest_bytes),
            "size": len(manifest_bytes),
            "annotations": {"org.opencontainers.image.ref.name": a.version,
                            "io.containerd.image.name": f"localhost/conduit:{a.version}"},
        }],
    }

    out = a.out
    layout = out / "oci"
    blobs = layout / "blobs/sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    files = layout_files(index, [config_bytes, manifest_bytes] + [gz for _, gz in layers])
    for name, data in files.items():
        (layout / name).write_bytes(data)
    # Docker ≤ 24 loads only its own archive format: the same blobs, named by a manifest.json.
    files["manifest.json"] = canonical([{
        "Config": "blobs/sha256/" + sha(config_bytes)[7:],
        "RepoTags": [f"localhost/conduit:{a.version}"],
        "Layers": ["blobs/sha256/" + sha(gz)[7:] for _, gz in layers],
    }])
    archive = out / f"conduit-{a.version}.oci.tar"
    write_archive(archive, files, a.created)

    os_release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    distro = f"{os_release.get('ID', 'debian').strip(chr(34))}-{os_release.get('VERSION_ID', '').strip(chr(34))}"
    contents = {
        "distro": distro,
        "image": {"digest": sha(manifest_bytes), "version": a.version, "revision": a.revision,
                  "created": created, "archive": archive.name,
                  "compressed_size": sum(len(gz) for _, gz in layers),
                  "uncompressed_size": sum(len(t) for t, _ in layers)},
        "packages": [{"name": p.name, "version": p.version, "license": p.license, "deb_sha256": p.deb_sha256,
                      "source": p.control.get("Source", p.name).split()[0], "homepage": p.control.get("Homepage", ""),
                      "maintainer": p.control.get("Maintainer", ""),
                      "description": p.control.get("Description", "").splitlines()[0] if p.control.get("Description") else ""}
                     for p in pkgs],
        "files": [{"path": "/" + e.path, "package": e.package, "kind": e.kind, "mode": oct(e.mode),
                   "owner": f"{e.uid}:{e.gid}", "size": len(e.data),
                   **({"sha256": hashlib.sha256(e.data).hexdigest()} if e.kind == "file" else {}),
                   **({"target": e.target} if e.kind == "symlink" else {})}
                  for e in sorted(os_entries + app_entries, key=lambda e: e.path)],
    }
    (out / "image-contents.json").write_text(json.dumps(contents, indent=1) + "\n")
    n_files = sum(1 for e in os_entries + app_entries if e.kind != "dir")
    print(f"image {sha(manifest_bytes)}: {n_files} files from {len(pkgs)} Debian packages + conduit; "
          f"{contents['image']['compressed_size'] / 2**20:.1f} MiB compressed, "
          f"{contents['image']['uncompressed_size'] / 2**20:.1f} MiB unpacked -> {archive}")


if __name__ == "__main__":
    main()
