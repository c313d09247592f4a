"""What assemble.py and sign.py share: canonical JSON, digests, and an OCI layout written as one
reproducible tar (sorted names, one timestamp, no owner names)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def canonical(obj: object) -> bytes:
    """JSON with sorted keys and no whitespace: the same object always hashes the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha(data: bytes) -> str:
    """The OCI digest of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layout_files(index: dict, blobs: list[bytes]) -> dict[str, bytes]:
    """An OCI image layout as {path: bytes}: oci-layout, index.json and each blob by digest."""
    files = {"oci-layout": canonical({"imageLayoutVersion": "1.0.0"}), "index.json": canonical(index)}
    for blob in blobs:
        files["blobs/sha256/" + sha(blob)[7:]] = blob
    return files


def write_archive(path: Path, files: dict[str, bytes], mtime: int) -> None:
    """`files` as one tar: names in order, every entry 0644 root-owned at `mtime`."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), mtime, 0o644
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
