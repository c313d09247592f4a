#!/usr/bin/env bash
# Builds a Conduit release into dist/: the container image (OCI archive), CycloneDX SBOMs for the
# binary and the image, a cosign-format signature of the image, SHA-256 sums (themselves signed),
# the Compose and Kubernetes files, and the install guide. Offline apart from Debian's mirror for
# the image's three packages (docs/install.md "Building the image yourself").
#
#   deploy/release.sh [--key cosign.key] [--identity REPOSITORY] [--out DIR]
#
# --key        the signing key: a PEM ECDSA P-256 private key (or COSIGN_KEY_FILE). Without one, a
#              throwaway key is made and the output is marked UNRELEASABLE — good for CI and for
#              trying the tooling, never for shipping.
# --identity   the repository the signature names (default localhost/conduit); verifiers pin it.
#
# Re-running with the same commit, toolchain and Debian packages gives the same image digest.
set -euo pipefail
cd "$(dirname "$0")/.."

key="${COSIGN_KEY_FILE:-}"
identity="localhost/conduit"
out="dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --key) key="$2"; shift 2 ;;
    --identity) identity="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "release.sh: unknown argument $1 (see the header of deploy/release.sh)" >&2; exit 2 ;;
  esac
done

target_dir="${CARGO_TARGET_DIR:-target}"
work="$target_dir/image"
mkdir -p "$work"
# dist/ holds exactly this release: made fresh, and only ever emptied if an earlier run made it.
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  [ -f "$out/.conduit-release" ] || { echo "release.sh: $out exists, is not empty and was not made by release.sh; give another --out" >&2; exit 2; }
  rm -rf "$out"
fi
mkdir -p "$out" && touch "$out/.conduit-release"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
created=$(git log -1 --format=%ct 2>/dev/null || echo 0)
license=$(sed -n 's/^license = "\(.*\)"/\1/p' Cargo.toml | head -1)
source_url="${CONDUIT_SOURCE_URL:-$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -1)}"

step() { printf '\n--> %s\n' "$*"; }
image_digest() { jq -r .image.digest "$1/image-contents.json"; }

step "binary: cargo auditable build --release (the dependency tree is embedded for the SBOM)"
command -v cargo-auditable >/dev/null || cargo install cargo-auditable --locked --version 0.7.7
cargo auditable build --release --locked -p conduit --bin conduit
# Debug line tables stay in target/ for symbolising crash reports; the image gets a stripped copy
# (the embedded dependency section survives --strip-debug).
objcopy --strip-debug "$target_dir/release/conduit" "$work/conduit"

step "image: deploy/image/assemble.py"
# Fresh .debs every time: apt-get download checks each against Debian's signed archive index, and
# a cached copy would keep a release on a package security updates have replaced.
rm -rf "$work/debs"
python3 deploy/image/assemble.py --binary "$work/conduit" --debs "$work/debs" --out "$work" \
  --version "$version" --revision "$revision" --created "$created" --source "$source_url" --license "$license"
digest=$(image_digest "$work")
# Reproducible: the same inputs assembled again elsewhere must give the same digest.
rm -rf "$work/again" && mkdir -p "$work/again"
python3 deploy/image/assemble.py --binary "$work/conduit" --debs "$work/debs" --out "$work/again" \
  --version "$version" --revision "$revision" --created "$created" --source "$source_url" --license "$license" >/dev/null
again=$(image_digest "$work/again")
[ "$again" = "$digest" ] || { echo "release.sh: the image is not reproducible: $digest, then $again" >&2; exit 1; }
echo "reproducible: assembled twice, $digest both times"
cp "$work/conduit-$version.oci.tar" "$out/"

step "SBOMs (CycloneDX 1.5), validated against the schema"
python3 deploy/sbom.py binary --binary "$work/conduit" --created "$created" --out "$out/conduit-$version.binary.cdx.json"
python3 deploy/sbom.py image --contents "$work/image-contents.json" \
  --binary-sbom "$out/conduit-$version.binary.cdx.json" --out "$out/conduit-$version.image.cdx.json"
python3 deploy/sbom.py validate "$out/conduit-$version.binary.cdx.json" "$out/conduit-$version.image.cdx.json"

step "signature (cosign format, offline)"
if [ -z "$key" ]; then
  key="$work/throwaway-cosign.key"
  openssl ecparam -name prime256v1 -genkey -noout -out "$key" 2>/dev/null
  echo "no --key / COSIGN_KEY_FILE: signed with a throwaway key — this dist/ is UNRELEASABLE" | tee "$out/UNRELEASABLE"
else
  rm -f "$out/UNRELEASABLE"
fi
openssl pkey -in "$key" -pubout -out "$out/cosign.pub"
cp "$out/cosign.pub" "$work/signing.pub"   # for `deploy/verify --key` on this machine
python3 deploy/sign.py --key "$key" --image-digest "$digest" --identity "$identity" --version "$version" \
  --created "$created" --out "$work/signature"
cp "$work/signature/conduit-$version.sig.oci.tar" "$out/"
cp "$work/signature/payload.json" "$out/conduit-$version.sig.payload.json"
cp "$work/signature/payload.sig" "$out/conduit-$version.sig.payload.sig"

step "deployment files and the install guide"
# From the commit, not the work tree: a secrets/ directory made while trying the Compose files, or
# any other untracked file, cannot reach the release.
git archive --format=tar.gz --prefix=conduit-$version/ -o "$out/conduit-$version-deploy.tar.gz" HEAD \
  deploy/compose deploy/k8s deploy/verify deploy/sbom.py deploy/cosign-verify

cp docs/install.md "$out/INSTALL.md"
printf '%s\n' "$digest" > "$out/IMAGE_DIGEST"

step "sums, signed"
(cd "$out" && find . -maxdepth 1 -type f ! -name 'SHA256SUMS*' ! -name '.conduit-release' -printf '%f\n' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
openssl dgst -sha256 -sign "$key" "$out/SHA256SUMS" | base64 -w0 > "$out/SHA256SUMS.sig"
echo >> "$out/SHA256SUMS.sig"

echo
echo "release $version ($revision): image $digest"
ls -l "$out"
