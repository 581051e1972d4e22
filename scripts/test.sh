#!/usr/bin/env bash
# Set up, then run every test tier: backend tests in .venv, add-on tests in .venv-blender.
# Extra arguments go to both pytest runs (e.g. -k name, -x).
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh || { echo "[test] setup failed"; exit 1; }

# Keep every cache and config out of the user's home (bpy writes ~/.config/blender, Mesa a shader cache).
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ani3d-test.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export HOME="$scratch/home" XDG_CACHE_HOME="$scratch/cache" XDG_CONFIG_HOME="$scratch/config"
export HF_HOME="$scratch/hf" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export BLENDER_USER_RESOURCES="$scratch/blender" MPLBACKEND=Agg
# OpenMP threads sleep instead of spinning while they wait: on a small shared machine spinning threads
# made PyTorch CPU work up to 10x slower (docs/render.md).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$HOME" "$XDG_CACHE_HOME" "$XDG_CONFIG_HOME" "$HF_HOME" "$BLENDER_USER_RESOURCES"

status=0
# The house rules: no import cycle between backend modules (prints each strongly connected component).
echo "[test] import graph of backend/"
.venv/bin/python scripts/check_imports.py || { echo "[test] import cycles in backend/ — failing"; status=1; }

run_tier() {  # name python dir [pytest args...]
  local name=$1 py=$2 dir=$3; shift 3
  echo "[test] tier '$name': $dir"
  "$py" -m pytest "$dir" -p no:cacheprovider "$@"
  local rc=$?
  if [ $rc -eq 5 ]; then
    # An empty tier is a broken tier: tests were moved or a conftest hides them.
    echo "[test] tier '$name' collected no tests — failing"
    status=1
  elif [ $rc -ne 0 ]; then
    echo "[test] tier '$name' failed (pytest exit $rc)"
    status=1
  fi
}
run_tier backend .venv/bin/python tests/backend "$@"
# The add-on tier in every Blender the add-on claims: the oldest (4.5 LTS), 5.0 and 5.3 (native splats).
for env in .venv-blender-4.5 .venv-blender .venv-blender-5.3; do
  run_tier "addon ($("$env/bin/python" -c 'import bpy; print("Blender", bpy.app.version_string)' 2>/dev/null))" \
    "$env/bin/python" tests/addon "$@"
done
if [ $status -eq 0 ]; then echo "[test] all tiers passed"; else echo "[test] FAILED"; fi
exit $status
