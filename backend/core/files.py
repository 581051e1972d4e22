"""Files that are never half-written: JSON via a temporary sibling + fsync + rename, and whole folders built
under a temporary sibling and renamed into place (``atomic_directory``).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from backend.core.errors import InputError

_counter = itertools.count()


def check_output_parent(out_dir: Path) -> None:
    """Fail early (InputError) if ``out_dir`` cannot be created or would clobber a non-job folder."""
    parent = out_dir.resolve().parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"out: cannot create {parent} ({exc.strerror})") from exc
    if not parent.is_dir():
        raise InputError(f"out: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"out: {parent} is not writable")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"out: {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / "result.json").is_file():
            raise InputError(f"out: {out_dir} exists, is not empty and is not a job folder; refusing to replace it")


@contextmanager
def atomic_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``out_dir``; on success replace ``out_dir`` with it, else delete it.

    An existing job folder at ``out_dir`` is replaced only after the new one is complete.
    """
    out_dir = Path(out_dir)
    check_output_parent(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{next(_counter)}"
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{next(_counter)}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any, *, allow_nan: bool = True) -> None:
    """Write JSON via a uniquely named temporary sibling, fsync and rename: never half-written, safe across
    threads. numpy arrays/scalars and paths are converted; ``allow_nan=False`` rejects NaN/inf."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, allow_nan=allow_nan, default=_json_default)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fsync_directory(path: Path) -> None:
    """Flush a directory entry (a rename into it) to disk, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
