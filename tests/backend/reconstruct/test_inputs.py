"""Reference-view inputs: image/mask loading, background removal, camera checks, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from backend.core.errors import InputError
from backend.reconstruct.inputs import (
    load_reference_image,
    load_reference_view,
    reference_camera,
    remove_border_background,
)

pytestmark = pytest.mark.unit


def test_rgba_alpha_is_the_mask(scene):
    warnings = []
    rgb, mask = load_reference_image(scene["image"], warnings)
    assert warnings == []
    assert rgb.shape == (96, 72, 3) and mask.shape == (96, 72)
    expected = scene["views"].alpha[0, ..., 0]
    assert float((mask - expected).abs().max()) < 1.0 / 255 + 1e-6


def test_rgb_background_removed_by_border_colour_with_warning(tmp_path):
    img = np.full((60, 40, 3), (20, 120, 220), np.uint8)
    img[15:45, 10:30] = (200, 60, 40)
    path = tmp_path / "plain.png"
    Image.fromarray(img).save(path)
    warnings = []
    _, mask = load_reference_image(path, warnings)
    assert len(warnings) == 1 and "border colour" in warnings[0]
    hard = mask > 0.5
    truth = torch.zeros(60, 40, dtype=torch.bool)
    truth[15:45, 10:30] = True
    assert int((hard ^ truth).sum()) <= 4  # the softened edge may round off the four corners


def test_border_removal_ignores_speckles():
    rgb = torch.zeros(30, 30, 3)
    rgb[5, 5] = 1.0  # one hot pixel is noise, not a person
    rgb[10:25, 10:20] = torch.tensor([0.9, 0.1, 0.1])
    mask = remove_border_background(rgb)
    assert float(mask[5, 5]) < 0.5 and float(mask[17, 15]) > 0.9


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.png", "image: file not found"),
    (lambda p: (p / "bad.png").write_text("not an image") and p / "bad.png", "not a readable image"),
])
def test_bad_image_files(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        load_reference_image(make(tmp_path), [])


def test_empty_mask_is_an_error(tmp_path):
    path = tmp_path / "empty.png"
    Image.fromarray(np.zeros((40, 30, 4), np.uint8), "RGBA").save(path)
    with pytest.raises(InputError, match="silhouette is empty") as err:
        load_reference_image(path, [])
    assert "\n" not in str(err.value)


def test_camera_required_and_size_checked(scene):
    with pytest.raises(InputError, match="camera: required"):
        reference_camera(None, (72, 96))
    with pytest.raises(InputError, match=r"size 100x96 does not match the camera's 72x96"):
        reference_camera(scene["camera"], (100, 96))
    scaled = reference_camera(scene["camera"], (144, 192))  # same aspect ratio: intrinsics rescaled
    assert scaled.width == 144 and float(scaled.fx[0]) == pytest.approx(2 * scene["camera"]["fx"])
    with pytest.raises(InputError, match=r"camera\[0\]\.world_from_camera: missing"):
        reference_camera({k: v for k, v in scene["camera"].items() if k != "world_from_camera"}, (72, 96))


def test_camera_facing_away_is_an_error(scene, default_body, walk):
    camera = dict(scene["camera"])
    m = np.array(camera["world_from_camera"])
    m[:3, 2] *= -1  # look the other way (keep a right-handed frame)
    m[:3, 0] *= -1
    camera["world_from_camera"] = m.tolist()
    with pytest.raises(InputError, match="faces away from the body") as err:
        load_reference_view(scene["image"], camera, default_body, walk, 0, [])
    assert "\n" not in str(err.value)


def test_reference_view_and_frame_checks(scene, default_body, walk):
    warnings = []
    view = load_reference_view(scene["image"], scene["camera"], default_body, walk, None, warnings)
    assert any("reference_frame" in w for w in warnings)
    assert view.pose.frame == 0 and view.pose.joint_transforms.shape == (default_body.num_joints, 4, 4)
    with pytest.raises(InputError, match=r"reference_frame: expected a frame in \[0, 5\], got 9"):
        load_reference_view(scene["image"], scene["camera"], default_body, walk, 9, [])
    with pytest.raises(InputError, match="camera: required"):
        load_reference_view(scene["image"], None, default_body, walk, 0, [])


def test_opaque_alpha_falls_back_to_border_removal(tmp_path):
    img = np.zeros((40, 30, 4), np.uint8)
    img[..., :3] = (250, 250, 250)
    img[10:30, 8:22, :3] = (30, 30, 200)
    img[..., 3] = 255
    path = tmp_path / "opaque.png"
    Image.fromarray(img, "RGBA").save(path)
    warnings = []
    _, mask = load_reference_image(path, warnings)
    assert any("fully opaque" in w for w in warnings)
    assert float(mask[20, 15]) > 0.9 and float(mask[2, 2]) < 0.1
