#!/usr/bin/env bash
# Regenerates crates/wire/prices.toml from the price map inside a pinned LiteLLM release plus
# crates/wire/prices-overrides.toml. Usage: crates/wire/prices-refresh.sh [LITELLM_VERSION] [DATE]
# Review the diff: every changed price, new model and removed model shows as a changed row.
set -euo pipefail
cd "$(dirname "$0")/../.."
version="${1:-1.108.7}"
date="${2:-$(date -u +%F)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The wheel is data here: only its JSON price map is read (it is not installed or run).
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "litellm==${version}"
python3 - "$work" <<'PY'
import sys, zipfile, glob
wheel = glob.glob(sys.argv[1] + "/litellm-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("litellm/model_prices_and_context_window_backup.json")
open(sys.argv[1] + "/prices.json", "wb").write(data)
PY
cargo run --quiet -p conduit --bin conduit -- prices generate --litellm "$work/prices.json" --litellm-version "$version" \
  --overrides crates/wire/prices-overrides.toml --date "$date" --out crates/wire/prices.toml
git --no-pager diff --stat -- crates/wire/prices.toml || true
