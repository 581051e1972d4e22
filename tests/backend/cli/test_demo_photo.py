"""The demo's synthetic reference photo: a straight-alpha RGBA PNG the reconstruction accepts."""

from __future__ import annotations

import imageio.v3 as iio
import pytest

from backend.stages.demo_photo import PHOTO_HEIGHT, PHOTO_WIDTH, write_reference_photo
from backend.motion.builtin import builtin_motion
from backend.reconstruct.inputs import load_reference_view

pytestmark = pytest.mark.unit


def test_reference_photo_is_usable(tmp_path, default_body):
    import json

    walk = builtin_motion("walk", default_body, frames=3)
    photo, camera = write_reference_photo(default_body, walk, tmp_path, num_gaussians=4000)
    rgba = iio.imread(photo)
    assert rgba.shape == (PHOTO_HEIGHT, PHOTO_WIDTH, 4)
    coverage = (rgba[..., 3] > 128).mean()
    assert 0.05 < coverage < 0.6  # a person, framed, not an empty or a full frame
    warnings: list[str] = []
    view = load_reference_view(photo, json.loads(camera.read_text()), default_body, walk, 0, warnings)
    assert view.mask.float().mean() > 0.05 and not warnings
