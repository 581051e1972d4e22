"""The extension zip builds, validates (Blender's own tool), installs into a clean bpy and registers /
unregisters cleanly."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import addon_utils
import bpy
import pytest

pytestmark = pytest.mark.bpy

REPO = Path(__file__).resolve().parents[2]
MODULE = "bl_ext.user_default.ani3dhuman"


def test_extension_builds_installs_registers_and_unregisters(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "build_addon.py"), "--output-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    zips = list(tmp_path.glob("ani3dhuman-*.zip"))
    assert len(zips) == 1
    names = zipfile.ZipFile(zips[0]).namelist()
    assert {"blender_manifest.toml", "__init__.py", "wire/__init__.py", "wire/client.py", "wire/protocol.py",
            "rig_export.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests")]
    assert sum(n.startswith("wheels/pyzmq-") and "abi3" in n for n in names) >= 1

    assert not hasattr(bpy.types.Scene, "ani3dhuman")
    assert bpy.ops.extensions.package_install_files(filepath=str(zips[0]), repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    try:
        assert MODULE in bpy.context.preferences.addons
        assert hasattr(bpy.types.Scene, "ani3dhuman")
        for op in ("add_body", "animate", "cancel", "import_result", "bake_alembic", "export_ply_sequence",
                   "export_usd", "start_backend", "stop_backend", "connect"):
            assert hasattr(bpy.types, f"ANI3DHUMAN_OT_{op}"), op
        assert bpy.context.scene.ani3dhuman.endpoint.startswith("tcp://")
        # An operator runs and reports instead of raising: no armature selected.
        with pytest.raises(RuntimeError, match="no armature selected"):
            bpy.ops.ani3dhuman.animate()
    finally:
        addon_utils.disable(MODULE, default_set=True)
    assert MODULE not in bpy.context.preferences.addons
    assert not hasattr(bpy.types.Scene, "ani3dhuman")
    assert not hasattr(bpy.types, "ANI3DHUMAN_OT_animate")
    repo = next(r for r in bpy.context.preferences.extensions.repos if r.module == "user_default")
    assert bpy.ops.extensions.package_uninstall(repo_directory=repo.directory, pkg_id="ani3dhuman") == {"FINISHED"}
    assert not (Path(repo.directory) / "ani3dhuman").exists()
