#!/usr/bin/env python3
"""Build the installable Blender extension zips, one per Python ABI that Blender ships, each staged from
blender_manifest.toml + blender_addon/ (+ the vendored wire package), then validated and built with that
Blender's own extension tool (blender_ext.py, shipped inside the bpy module), so no Blender binary is needed.

    python scripts/build_addon.py [--output-dir DIR] [--target py311|py313 ...]

    dist/ani3dhuman-<version>-py311.zip   Blender 4.5 LTS - 5.0 (Python 3.11): the cp311 pyzmq wheels
    dist/ani3dhuman-<version>-py313.zip   Blender 5.1 and later (Python 3.13): the abi3 pyzmq wheels

Why two: Blender derives the Python versions a zip supports from the wheels it bundles, and a zip holding both
cp311 and abi3 wheels is narrowed to 3.11 (Blender 5.1+ then refuses it). Each zip therefore carries one ABI's
wheels and the Blender range (``blender_version_min`` / ``blender_version_max``, the first version not
supported) of that Python. blender_ext.py of the target's Blender is found in the repository's test
environment (``.venv-blender`` for py311, ``.venv-blender-5.3`` for py313; scripts/setup.sh makes them) or
given as ``BLENDER_EXT_PY311`` / ``BLENDER_EXT_PY313`` (``PYTHON::PATH`` to run it with that interpreter, or a
path run with this one).

The pyzmq wheels the manifest lists live in blender_addon/wheels/ (about 5.5 MB for Linux, macOS and Windows);
missing ones are downloaded with pip into the staging folder when --download-wheels is given.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from vendor_wire import vendor_wire

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "blender_manifest.toml"
ADDON_DIR = REPO / "blender_addon"
_EXT_SUBPATH = "scripts/addons_core/bl_pkg/cli/blender_ext.py"


@dataclass(frozen=True)
class Target:
    """One zip: the Blender versions of one Python ABI and the wheels they load."""

    name: str
    python: str
    wheel_marker: str  # substring of the bundled wheels' file names
    version_min: str | None  # None: the manifest's
    version_max: str | None  # first Blender version not supported; None: open-ended
    test_env: str


TARGETS = {
    "py311": Target("py311", "3.11", "-cp311-cp311-", None, "5.1.0", ".venv-blender"),
    "py313": Target("py313", "3.13", "-abi3-", "5.1.0", None, ".venv-blender-5.3"),
}


def find_blender_ext(target: Target) -> tuple[str, Path]:
    """(interpreter, blender_ext.py) of the target's Blender: $BLENDER_EXT_<TARGET> or the repo's test env."""
    given = os.environ.get(f"BLENDER_EXT_{target.name.upper()}")
    if given:
        python, _, path = given.rpartition("::")
        return python or sys.executable, Path(path)
    env = REPO / target.test_env
    for root in glob.glob(str(env / "lib" / f"python{target.python}" / "site-packages" / "bpy")):
        found = sorted(glob.glob(os.path.join(root, "*", _EXT_SUBPATH)))
        if found:
            return str(env / "bin" / "python"), Path(found[-1])
    raise SystemExit(f"blender_ext.py for {target.name} (Blender on Python {target.python}) not found: run "
                     f"scripts/setup.sh (makes {target.test_env}) or set BLENDER_EXT_{target.name.upper()}")


def target_manifest(text: str, target: Target, wheels: list[str]) -> str:
    """The manifest text for one target: only its wheels, its Blender version range."""
    text = re.sub(r"(?ms)^wheels = \[.*?^\]\n", "wheels = [\n" + "".join(f'  "{w}",\n' for w in wheels) + "]\n",
                  text)
    if target.version_min:
        text = re.sub(r'(?m)^blender_version_min = ".*"$', f'blender_version_min = "{target.version_min}"', text)
    if target.version_max:
        text = re.sub(r'(?m)^(blender_version_min = ".*")$', rf'\1\nblender_version_max = "{target.version_max}"',
                      text)
    return text


def stage(staging: Path, target: Target, download_wheels: bool) -> dict:
    """Copy the target's manifest and the add-on into ``staging``; returns the parsed manifest."""
    text = MANIFEST.read_text(encoding="utf-8")
    wheels = [w for w in tomllib.loads(text).get("wheels", []) if target.wheel_marker in Path(w).name]
    if not wheels:
        raise SystemExit(f"blender_manifest.toml lists no wheels for {target.name} ('{target.wheel_marker}')")
    manifest = tomllib.loads(target_manifest(text, target, wheels))
    shutil.copytree(ADDON_DIR, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "wire"))
    vendor_wire(staging)  # the wire package is backend/wire, vendored into the extension, never a committed copy
    (staging / "blender_manifest.toml").write_text(target_manifest(text, target, wheels), encoding="utf-8")
    for wheel in (staging / "wheels").glob("*.whl"):  # only this target's wheels travel
        if f"./wheels/{wheel.name}" not in wheels:
            wheel.unlink()
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


def run_ext(python: str, ext: Path, *args: str) -> None:
    result = subprocess.run([python, str(ext), *args], capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    if result.returncode:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"blender_ext {args[0]} failed (exit {result.returncode})")


def build(output_dir: Path, target: Target, download_wheels: bool = False) -> Path:
    """Stage, validate, build and re-validate one target's zip with its Blender's tool; returns the zip path."""
    python, ext = find_blender_ext(target)
    output_dir = output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ani3dhuman-addon-") as tmp:
        staging = Path(tmp) / "ani3dhuman"
        manifest = stage(staging, target, download_wheels)
        run_ext(python, ext, "validate", str(staging))
        zip_path = output_dir / f"{manifest['id']}-{manifest['version']}-{target.name}.zip"
        if zip_path.exists():
            zip_path.unlink()
        run_ext(python, ext, "build", "--source-dir", str(staging), "--output-filepath", str(zip_path))
    run_ext(python, ext, "validate", str(zip_path))
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=str(REPO / "dist"), help="where the zip goes (default dist/)")
    parser.add_argument("--download-wheels", action="store_true",
                        help="pip-download manifest wheels missing from blender_addon/wheels into the staging folder")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="build only this zip (repeatable; default: every target)")
    args = parser.parse_args(argv)
    for name in args.target or sorted(TARGETS):
        zip_path = build(Path(args.output_dir), TARGETS[name], args.download_wheels)
        print(f"extension ({name}): {zip_path} ({zip_path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
