#!/usr/bin/env bash
# Set up, then run the main job on embedded defaults; results under out/demo/:
#   out/demo/<motion>/        job folders of the built-in motions (PLY frames, renders)
#   out/demo/blender/         the headless Blender journey (5.0): Add Body, Animate against a local backend,
#                             import, Alembic + USD bakes, a Blender-rendered preview, the .blend
#   out/demo/blender-5.3/     the same in Blender 5.3: native Gaussian splats, the Alembic splat cache
# Extra arguments go to `ani3dhuman demo` (e.g. --gaussians 20000 --frames 24).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # see docs/render.md: spinning OpenMP threads on small machines
.venv/bin/ani3dhuman demo --out out/demo "$@"
.venv-blender/bin/python scripts/demo_blender.py --out out/demo/blender --motion out/demo/motions/walk.npz --frames 48
# The same journey in Blender 5.3, where the result is a native Gaussian-splat cloud (preview.png renders the splats).
if [ -x .venv-blender-5.3/bin/python ]; then
  .venv-blender-5.3/bin/python scripts/demo_blender.py --out out/demo/blender-5.3 --motion out/demo/motions/walk.npz \
    --frames 48
fi
echo "[demo] results under out/demo/"
