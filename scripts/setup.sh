#!/usr/bin/env bash
# Idempotent set-up of the Python environments (docs/design.md §1):
#   .venv              the backend: torch first, then the project with its test extras
#   .venv-blender      the add-on's test environment on Blender 5.0.1 (bpy pins numpy<2), pyzmq, pytest
#   .venv-blender-4.5  the same on Blender 4.5 LTS, the oldest Blender the add-on claims (Python 3.11)
#   .venv-blender-5.3  the same on Blender 5.3 (Python 3.13: native Gaussian splats)
# None of the Blender environments ever gets torch.
#
# Environment variables:
#   ANI3D_PYTHON       interpreter used to create the environments (default: python3)
#   ANI3D_TORCH_SPEC   torch requirement installed when no torch is importable (default: torch==2.13.0;
#                      a CUDA user may pass e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128")
#   ANI3D_PYTHON313    a Python 3.13 interpreter for .venv-blender-5.3 (default: python3.13 on PATH, then pyenv's)
#   ANI3D_SKIP_BLENDER_ENV=1   do not create the Blender environments
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
# Compile the cloth simulation's kernels once into the per-user cache (about a minute on a CPU the first time,
# seconds afterwards), so the first job with clothing dynamics does not pay for it.
if ! .venv/bin/python -c "from backend.dynamics.simulate import kernels_cached; raise SystemExit(0 if kernels_cached() else 1)" 2>/dev/null; then
  echo "[setup] compiling the cloth simulation's kernels (newton/warp, once per user)"
  .venv/bin/python -c "from backend.dynamics.simulate import warm_up; print(f'[setup] cloth kernels ready in {warm_up():.0f} s')"
fi

# ---- Blender test environments -------------------------------------------------------------------------
blender_env() {  # folder python bpy-version numpy-spec
  local dir=$1 py=$2 bpy=$3 numpy=$4
  if [ ! -x "$dir/bin/python" ]; then
    echo "[setup] creating $dir (Blender $bpy)"
    "$py" -m venv "$dir"
  fi
  local stamp
  stamp=$(echo "$bpy $numpy $(stamp_of scripts/setup.sh)" | sha256sum | cut -c1-16)
  if [ "$(cat "$dir/.ani3d-stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "[setup] installing bpy==$bpy, pyzmq, pytest into $dir"
    "$dir/bin/pip" install -q "bpy==$bpy" "$numpy" "pyzmq>=25" "pytest>=8"
    echo "$stamp" > "$dir/.ani3d-stamp"
  fi
}

find_python313() {
  if [ -n "${ANI3D_PYTHON313:-}" ]; then echo "$ANI3D_PYTHON313"; return; fi
  local candidate
  for candidate in python3.13 "$(command -v pyenv >/dev/null 2>&1 && pyenv root)"/versions/3.13*/bin/python3.13 \
                   "$HOME"/.pyenv/versions/3.13*/bin/python3.13; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1; then
      echo "$candidate"; return
    fi
  done
}

if [ "${ANI3D_SKIP_BLENDER_ENV:-0}" != "1" ]; then
  blender_env .venv-blender "$PY" 5.0.1 "numpy>=1.26,<2"
  blender_env .venv-blender-4.5 "$PY" 4.5.15 "numpy>=1.26,<2"
  PY313=$(find_python313)
  if [ -z "$PY313" ]; then
    echo "[setup] error: Blender 5.1+ (pip bpy 5.3) needs Python 3.13, and none was found."
    echo "[setup]        Install Python 3.13 (e.g. 'pyenv install 3.13') or set ANI3D_PYTHON313=/path/to/python3.13,"
    echo "[setup]        or set ANI3D_SKIP_BLENDER_ENV=1 to skip the Blender environments."
    exit 1
  fi
  blender_env .venv-blender-5.3 "$PY313" 5.3.0 "numpy>=2"
fi
# The add-on runs backend/wire, vendored into blender_addon/wire/ (git ignores the copy).
"$PY" scripts/vendor_wire.py >/dev/null
echo "[setup] ready"
