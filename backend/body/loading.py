"""``load_body_model``: the embedded default body (cached) or an SMPL / SMPL+H / SMPL-X model file."""

from __future__ import annotations

import functools
from pathlib import Path

from backend.body.model import BodyModel


def load_body_model(name_or_path: str | Path = "default") -> BodyModel:
    """Load a body model.

    Args:
        name_or_path: ``"default"`` for the embedded mannequin, or the path of an SMPL / SMPL+H / SMPL-X
            model file (``.pkl`` or ``.npz``).

    Raises:
        FileNotFoundError: the file does not exist.
        backend.core.errors.InputError: the file is not an SMPL-family model.
    """
    if str(name_or_path) == "default":
        return _default_body()
    from backend.body.smplx_body import SmplxBody

    return SmplxBody(name_or_path)


@functools.lru_cache(maxsize=1)
def _default_body() -> BodyModel:
    from backend.body.mannequin_body import MannequinBody

    return MannequinBody()
