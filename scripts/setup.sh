#!/usr/bin/env bash
# Idempotent set-up of the two Python environments (docs/design.md §1):
#   .venv          the backend: torch first, then the project with its test extras
#   .venv-blender  the add-on's test environment: bpy (pins numpy<2), pyzmq, pytest — never torch
#
# Environment variables:
#   ANI3D_PYTHON       interpreter used to create the environments (default: python3)
#   ANI3D_TORCH_SPEC   torch requirement installed when no torch is importable (default: torch==2.13.0;
#                      a CUDA user may pass e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128")
#   ANI3D_SKIP_BLENDER_ENV=1   do not create .venv-blender
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${ANI3D_PYTHON:-python3}
TORCH_SPEC=${ANI3D_TORCH_SPEC:-torch==2.13.0}
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# ---- backend environment -------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  .venv/bin/pip install -q $TORCH_SPEC
fi
# Pin whatever torch is installed so that no dependency can make the resolver replace it.
torch_version=$(.venv/bin/python -c "import torch; print(torch.__version__.split('+')[0])")
echo "torch==${torch_version}" > .venv/torch-constraint.txt
backend_stamp=$(stamp_of pyproject.toml scripts/setup.sh .venv/torch-constraint.txt)
if [ "$(cat .venv/.ani3d-stamp 2>/dev/null)" != "$backend_stamp" ] || ! .venv/bin/python -c "import backend" >/dev/null 2>&1; then
  echo "[setup] installing the backend (editable) with test extras"
  .venv/bin/pip install -q -c .venv/torch-constraint.txt -e ".[test]"
  echo "$backend_stamp" > .venv/.ani3d-stamp
fi

# ---- Blender test environment ---------------------------------------------------------------------------
if [ "${ANI3D_SKIP_BLENDER_ENV:-0}" != "1" ]; then
  if [ ! -x .venv-blender/bin/python ]; then
    echo "[setup] creating .venv-blender"
    "$PY" -m venv .venv-blender
  fi
  blender_stamp=$(stamp_of scripts/setup.sh)
  if [ "$(cat .venv-blender/.ani3d-stamp 2>/dev/null)" != "$blender_stamp" ]; then
    echo "[setup] installing bpy==5.0.1, pyzmq, pytest into .venv-blender"
    .venv-blender/bin/pip install -q "bpy==5.0.1" "numpy>=1.26,<2" "pyzmq>=25" "pytest>=8"
    echo "$blender_stamp" > .venv-blender/.ani3d-stamp
  fi
fi
# The add-on runs backend/wire, vendored into blender_addon/wire/ (git ignores the copy).
"$PY" scripts/vendor_wire.py >/dev/null
echo "[setup] ready"
