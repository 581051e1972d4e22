"""Add-on tests run in .venv-blender (pip bpy); they never import torch or ``backend``.

Blender writes its config and caches under HOME / BLENDER_USER_RESOURCES, so those go to a temporary
directory unless the caller (scripts/test.sh) already set them — before ``bpy`` is imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for _path in (REPO, Path(__file__).resolve().parent):  # the add-on package, and the test helpers
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# The add-on runs the wire package of the backend, vendored (never committed): refresh it before any import.
_spec = importlib.util.spec_from_file_location("vendor_wire", REPO / "scripts" / "vendor_wire.py")
_vendor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_vendor)
_vendor.vendor_wire(REPO / "blender_addon")

if not os.environ.get("BLENDER_USER_RESOURCES"):
    _scratch = Path(tempfile.mkdtemp(prefix="ani3d-addon-tests-"))
    for var, sub in (("HOME", "home"), ("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"),
                     ("BLENDER_USER_RESOURCES", "blender")):
        os.environ[var] = str(_scratch / sub)
        (_scratch / sub).mkdir(parents=True, exist_ok=True)

import bpy  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def empty_scene():
    """Every test starts from an empty factory scene."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy.context.scene


@pytest.fixture
def addon():
    """The add-on registered from the source tree (unregistered afterwards)."""
    import blender_addon

    blender_addon.register()
    try:
        yield blender_addon
    finally:
        blender_addon.unregister()


@pytest.fixture(autouse=True, scope="session")
def _no_torch():
    yield
    assert "torch" not in sys.modules, "add-on tests must not import torch"
    assert "backend" not in sys.modules, "add-on tests must not import the backend package"
