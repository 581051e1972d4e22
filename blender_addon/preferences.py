"""Add-on preferences: how to start a local backend and where results go."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import StringProperty

ADDON_ID = __package__


def _default_backend_dir() -> str:
    """The repository root when the add-on runs from a source checkout (it has backend/), else ''."""
    root = Path(__file__).resolve().parent.parent
    return str(root) if (root / "backend" / "__main__.py").is_file() else ""


class Ani3DHumanPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Python of the backend environment (with torch and the 'backend' package), e.g. "
                    "<checkout>/.venv/bin/python")
    backend_dir: StringProperty(
        name="Backend Folder", subtype="DIR_PATH", default="",
        description="Working folder for 'python -m backend serve' (the checkout; empty = a source checkout "
                    "next to the add-on, if any)")
    jobs_dir: StringProperty(name="Jobs Folder", subtype="DIR_PATH", default="",
                             description="Where a local backend keeps its jobs (empty = a temporary folder)")
    results_dir: StringProperty(
        name="Results Folder", subtype="DIR_PATH", default="",
        description="Where downloaded results are written (empty = 'ani3dhuman_results' next to the .blend, or "
                    "a temporary folder for unsaved files)")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "python_path")
        layout.prop(self, "backend_dir")
        layout.prop(self, "jobs_dir")
        layout.prop(self, "results_dir")


@dataclass
class Prefs:
    """Resolved preferences (also used when the add-on is registered from the source tree, without an entry
    in the preferences, as in tests)."""

    python_path: str = ""
    backend_dir: str = ""
    jobs_dir: str = ""
    results_dir: str = ""


def get_prefs(context=None) -> Prefs:
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID) if context is not None else None
    source = addon.preferences if addon is not None and addon.preferences is not None else None
    prefs = Prefs(**{k: getattr(source, k, "") for k in ("python_path", "backend_dir", "jobs_dir", "results_dir")})
    if not prefs.backend_dir:
        prefs.backend_dir = _default_backend_dir()
    if not prefs.python_path and prefs.backend_dir:
        candidate = Path(prefs.backend_dir) / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        if candidate.is_file():
            prefs.python_path = str(candidate)
    if not prefs.jobs_dir:
        prefs.jobs_dir = str(Path(tempfile.gettempdir()) / "ani3dhuman_jobs")
    return prefs


def results_root(prefs: Prefs) -> Path:
    """Folder for downloaded results."""
    if prefs.results_dir:
        return Path(bpy.path.abspath(prefs.results_dir))
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//ani3dhuman_results"))
    return Path(tempfile.gettempdir()) / "ani3dhuman_results"


CLASSES = (Ani3DHumanPreferences,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
