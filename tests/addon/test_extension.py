"""The extension zip for this Blender's Python builds, validates with this Blender's own tool, installs into a
clean bpy and registers / unregisters cleanly; in a Blender whose environment has no pyzmq, ``zmq`` is imported
from the wheel the zip bundles."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import addon_utils
import bpy
import pytest

pytestmark = pytest.mark.bpy

REPO = Path(__file__).resolve().parents[2]
MODULE = "bl_ext.user_default.ani3dhuman"
TARGET = "py313" if sys.version_info >= (3, 13) else "py311"


def _build(out: Path) -> Path:
    """Build this Python's zip, validated by this very Blender's blender_ext.py."""
    (ext,) = {os.path.realpath(f) for entry in sys.path for f in glob.glob(
        os.path.join(entry, "bpy", "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py"))}
    env = {**os.environ, f"BLENDER_EXT_{TARGET.upper()}": f"{sys.executable}::{ext}"}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "build_addon.py"), "--output-dir", str(out),
                             "--target", TARGET], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    zips = list(out.glob(f"ani3dhuman-*-{TARGET}.zip"))
    assert len(zips) == 1
    return zips[0]


def test_extension_builds_installs_registers_and_unregisters(tmp_path):
    zips = [_build(tmp_path)]
    names = zipfile.ZipFile(zips[0]).namelist()
    wheels = [n for n in names if n.startswith("wheels/pyzmq-")]
    assert wheels and all(("abi3" in n) == (TARGET == "py313") for n in wheels), wheels
    assert {"blender_manifest.toml", "__init__.py", "wire/__init__.py", "wire/client.py", "wire/protocol.py",
            "rig_export.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests")]
    manifest = zipfile.ZipFile(zips[0]).read("blender_manifest.toml").decode()
    assert ('blender_version_min = "5.1.0"' in manifest) == (TARGET == "py313")
    assert ('blender_version_max = "5.1.0"' in manifest) == (TARGET == "py311")

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


BUNDLED_ZMQ = textwrap.dedent("""
    import importlib.machinery, os, sys
    # This environment's own pyzmq is hidden: what imports now is what a clean Blender has.
    hidden = [p for p in sys.path if os.path.isdir(os.path.join(p, "zmq"))]

    class HideEnvironmentZmq:
        def find_spec(self, name, path=None, target=None):
            if name != "zmq":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if p not in hidden])
            if spec is None:
                raise ModuleNotFoundError("No module named 'zmq' (the environment's copy is hidden)", name=name)
            return spec

    sys.meta_path.insert(0, HideEnvironmentZmq())
    try:
        import zmq
        raise SystemExit("zmq importable before the extension is installed: " + zmq.__file__)
    except ImportError:
        pass
    import bpy
    import addon_utils
    bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
    assert "bl_ext.user_default.ani3dhuman" in bpy.context.preferences.addons
    import zmq
    local = os.path.join(bpy.utils.user_resource("EXTENSIONS"), ".local")
    print("zmq", zmq.__file__, zmq.zmq_version())
    assert os.path.realpath(zmq.__file__).startswith(os.path.realpath(local)), (zmq.__file__, local)
    client = sys.modules["bl_ext.user_default.ani3dhuman.wire.client"]
    assert client.zmq is zmq
    addon_utils.disable("bl_ext.user_default.ani3dhuman", default_set=True)
    print("bundled pyzmq ok")
""")


def test_bundled_pyzmq_wheel_is_what_runs(tmp_path):
    zip_path = _build(tmp_path / "dist")
    env = {**os.environ}
    for var, sub in (("HOME", "home"), ("BLENDER_USER_RESOURCES", "blender"), ("XDG_CONFIG_HOME", "config")):
        env[var] = str(tmp_path / sub)
        (tmp_path / sub).mkdir()
    result = subprocess.run([sys.executable, "-c", BUNDLED_ZMQ, str(zip_path)], capture_output=True, text=True,
                            timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bundled pyzmq ok" in result.stdout
    assert os.path.realpath(str(tmp_path / "blender")) in result.stdout  # the zmq file lies under the extension
