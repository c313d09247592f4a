#!/usr/bin/env python3
"""Signs a Conduit image the way cosign does, with an ECDSA P-256 key, offline.

  sign.py --key cosign.key --image-digest sha256:… --identity REPO --out DIR [--created EPOCH]

Writes to DIR:
  payload.json            the "simple signing" payload: the image's manifest digest and the
                          repository it is signed for (`critical.identity.docker-reference`)
  payload.sig             base64 of the DER ECDSA-P256-SHA256 signature over payload.json
  conduit-VERSION.sig.oci.tar
                          the signature as cosign stores it beside an image in a registry: an OCI
                          manifest whose one layer is the payload (media type
                          application/vnd.dev.cosign.simplesigning.v1+json) with the signature in
                          the `dev.cosignproject.cosign/signature` annotation, tagged
                          `sha256-<digest>.sig`. Pushed next to the image, `cosign verify --key
                          cosign.pub --insecure-ignore-tlog=true REGISTRY/conduit@sha256:…` and
                          containers-image's `sigstoreSigned` policy (skopeo, podman) accept it.

The cryptography is OpenSSL's (`openssl dgst -sha256 -sign`); no transparency log is involved, so
an air-gapped site verifies with the public key alone. The key never leaves the signing host: give
its path (a PEM EC private key, e.g. from `openssl ecparam -name prime256v1 -genkey -noout`, kept in
a secret manager or an HSM-backed file), never put it in the repository.
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oci import canonical, layout_files, sha, write_archive  # noqa: E402

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--key", required=True, type=Path, help="PEM EC P-256 private key")
    ap.add_argument("--image-digest", required=True, help="the image manifest's digest, sha256:…")
    ap.add_argument("--identity", required=True, help="the repository signed for, e.g. registry.corp/conduit")
    ap.add_argument("--version", required=True)
    ap.add_argument("--created", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    if not a.image_digest.startswith("sha256:") or len(a.image_digest) != 71:
        sys.exit(f"sign: --image-digest {a.image_digest!r} is not sha256:<64 hex>")
    curve = subprocess.run(["openssl", "pkey", "-in", str(a.key), "-noout", "-text"],
                           check=True, capture_output=True, text=True).stdout
    if "prime256v1" not in curve and "P-256" not in curve:
        sys.exit(f"sign: {a.key} is not an ECDSA P-256 key (cosign keys are); make one with "
                 "`openssl ecparam -name prime256v1 -genkey -noout -out cosign.key`")

    payload = canonical({
        "critical": {
            "identity": {"docker-reference": a.identity},
            "image": {"docker-manifest-digest": a.image_digest},
            "type": "cosign container image signature",
        },
        "optional": {"org.opencontainers.image.version": a.version},
    })
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "payload"
        p.write_bytes(payload)
        der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(a.key), str(p)],
                             check=True, capture_output=True).stdout
    signature = base64.b64encode(der).decode()

    config = canonical({
        "architecture": "", "os": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "rootfs": {"type": "layers", "diff_ids": [sha(payload)]},
        "config": {},
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": SIMPLESIGNING, "digest": sha(payload), "size": len(payload),
                    "annotations": {SIGNATURE_ANNOTATION: signature}}],
    })
    tag = a.image_digest.replace(":", "-") + ".sig"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
                       "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }
    files = layout_files(index, [config, manifest, payload])

    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "payload.json").write_bytes(payload)
    (a.out / "payload.sig").write_text(signature + "\n")
    archive = a.out / f"conduit-{a.version}.sig.oci.tar"
    write_archive(archive, files, a.created)
    print(f"signed {a.image_digest} for {a.identity}: {archive} (tag {tag})")


if __name__ == "__main__":
    main()
