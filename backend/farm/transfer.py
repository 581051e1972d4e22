"""Job files between machines that share no folder: a job's input files travel with the task, its output folder
comes back as bytes and is written on the driver atomically (temporary sibling + rename).

Inputs named by a job spec: ``image``, ``import_gaussians`` and ``extras.reference_pose``.
"""

from __future__ import annotations

import os
from pathlib import Path

from backend.core.errors import InputError
from backend.core.files import atomic_directory

INPUT_FIELDS = ("image", "import_gaussians", "extras.reference_pose")


def _get(spec: dict, field: str):
    head, _, tail = field.partition(".")
    return (spec.get(head) or {}).get(tail) if tail else spec.get(head)


def _set(spec: dict, field: str, value) -> None:
    head, _, tail = field.partition(".")
    if tail:
        spec[head] = {**(spec.get(head) or {}), tail: value}
    else:
        spec[head] = value


def pack_inputs(spec: dict) -> dict[str, tuple[str, bytes]]:
    """The input files a spec names: ``{field: (file name, bytes)}``."""
    files = {}
    for field in INPUT_FIELDS:
        path = _get(spec, field)
        if path is None:
            continue
        file = Path(path)
        if not file.is_file():
            raise InputError(f"{field}: file not found: {file}")
        files[field] = (file.name, file.read_bytes())
    return files


def unpack_inputs(spec: dict, files: dict[str, tuple[str, bytes]], folder: Path) -> dict:
    """Write the packed inputs under ``folder`` and return a copy of ``spec`` that names them there."""
    spec = dict(spec)
    for field, (name, data) in files.items():
        target = folder / field.replace(".", "_") / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        _set(spec, field, str(target))
    return spec


def pack_folder(folder: str | os.PathLike) -> dict[str, bytes]:
    """Every file under ``folder``: ``{relative posix path: bytes}``."""
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def unpack_folder(files: dict[str, bytes], out_dir: str | os.PathLike) -> Path:
    """Write ``files`` as the folder ``out_dir``, atomically: complete or absent (an existing job folder there is
    replaced only when this one is complete)."""
    with atomic_directory(out_dir) as tmp:
        for rel, data in files.items():
            target = tmp / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise InputError(f"result file outside the job folder: {rel!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return Path(out_dir)
