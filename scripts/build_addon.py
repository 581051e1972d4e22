#!/usr/bin/env python3
"""Build the installable Blender extension zip: stage blender_manifest.toml with blender_addon/'s files, then
validate and build it with Blender's own extension tool (blender_ext.py, shipped inside the bpy module), so no
Blender binary is needed.

    python scripts/build_addon.py [--output-dir DIR]      # default dist/ -> dist/ani3dhuman-<version>.zip

The pyzmq wheels the manifest lists live in blender_addon/wheels/ (about 5.5 MB for Linux, macOS and Windows,
Python 3.11 and abi3); missing ones are downloaded with pip into the staging folder when --download-wheels is
given.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from vendor_wire import vendor_wire

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "blender_manifest.toml"
ADDON_DIR = REPO / "blender_addon"
_EXT_SUBPATH = "scripts/addons_core/bl_pkg/cli/blender_ext.py"


def find_blender_ext() -> Path:
    """Locate blender_ext.py: $BLENDER_EXT, the bpy module importable here, or the repo's .venv-blender."""
    if os.environ.get("BLENDER_EXT"):
        return Path(os.environ["BLENDER_EXT"])
    roots = []
    spec = importlib.util.find_spec("bpy")
    if spec is not None and spec.submodule_search_locations:
        roots += list(spec.submodule_search_locations)
    roots += glob.glob(str(REPO / ".venv-blender" / "lib" / "python3*" / "site-packages" / "bpy"))
    for root in roots:
        found = sorted(glob.glob(os.path.join(root, "*", _EXT_SUBPATH)))
        if found:
            return Path(found[-1])
    raise SystemExit("blender_ext.py not found: install bpy (scripts/setup.sh makes .venv-blender) or set BLENDER_EXT")


def stage(staging: Path, download_wheels: bool) -> dict:
    """Copy the manifest and the add-on into ``staging``; returns the parsed manifest."""
    manifest = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    shutil.copytree(ADDON_DIR, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "wire"))
    vendor_wire(staging)  # the wire package is backend/wire, vendored into the extension, never a committed copy
    shutil.copy2(MANIFEST, staging / "blender_manifest.toml")
    missing = [w for w in manifest.get("wheels", []) if not (staging / w).is_file()]
    if missing and download_wheels:
        for wheel in missing:
            name = Path(wheel).name
            dist, version, python, abi, platform = name[:-4].split("-", 4)
            cmd = [sys.executable, "-m", "pip", "download", f"{dist}=={version}", "--only-binary=:all:", "--no-deps",
                   "--python-version", python[2] + "." + python[3:], "--implementation", "cp", "--abi", abi,
                   "--platform", platform.split(".")[0], "-d", str((staging / wheel).parent)]
            subprocess.run(cmd, check=True)
        missing = [w for w in manifest.get("wheels", []) if not (staging / w).is_file()]
    if missing:
        raise SystemExit(f"wheels listed in blender_manifest.toml are missing: {missing} "
                         f"(run with --download-wheels)")
    return manifest


def run_ext(ext: Path, *args: str) -> None:
    result = subprocess.run([sys.executable, str(ext), *args], capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    if result.returncode:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"blender_ext {args[0]} failed (exit {result.returncode})")


def build(output_dir: Path, download_wheels: bool = False) -> Path:
    """Stage, validate, build and re-validate; returns the zip path."""
    ext = find_blender_ext()
    output_dir = output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ani3dhuman-addon-") as tmp:
        staging = Path(tmp) / "ani3dhuman"
        manifest = stage(staging, download_wheels)
        run_ext(ext, "validate", str(staging))
        zip_path = output_dir / f"{manifest['id']}-{manifest['version']}.zip"
        if zip_path.exists():
            zip_path.unlink()
        run_ext(ext, "build", "--source-dir", str(staging), "--output-filepath", str(zip_path))
    run_ext(ext, "validate", str(zip_path))
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=str(REPO / "dist"), help="where the zip goes (default dist/)")
    parser.add_argument("--download-wheels", action="store_true",
                        help="pip-download manifest wheels missing from blender_addon/wheels into the staging folder")
    args = parser.parse_args(argv)
    zip_path = build(Path(args.output_dir), args.download_wheels)
    print(f"extension: {zip_path} ({zip_path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
