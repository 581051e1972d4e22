"""Writers (PNG, contact sheet, MP4) and ``ani3dhuman render`` on a small job folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend.cli import main
from backend.gaussians.ply import save_ply
from backend.render import frame_subject, orbit_cameras, save_cameras
from backend.render.scenes import body_gaussians
from backend.render.video import contact_sheet, to_uint8, write_mp4

pytestmark = pytest.mark.unit


def test_to_uint8_and_contact_sheet_layout():
    frames = torch.linspace(0, 1, 10)[:, None, None, None].expand(10, 6, 8, 3)
    arr = to_uint8(frames)
    assert arr.dtype == np.uint8 and arr.shape == (10, 6, 8, 3)
    assert arr[0].max() == 0 and arr[-1].min() == 255
    sheet = contact_sheet(frames, columns=3, max_frames=6, pad=1)
    assert sheet.shape == (2 * 6 + 3, 3 * 8 + 4, 3)
    assert sheet[1, 1, 0] == 0 and sheet[-2, -2, 0] == 255  # first and last frames are picked


def test_mp4_decodes_with_the_right_frame_count(tmp_path):
    import imageio.v2 as imageio

    frames = np.zeros((5, 31, 40, 3), np.uint8)  # odd height is padded
    frames[:, :, :20] = 200
    path = write_mp4(frames, tmp_path / "v.mp4", fps=10)
    with imageio.get_reader(path) as reader:
        decoded = np.stack([frame for frame in reader.iter_data()])
    assert decoded.shape == (5, 32, 40, 3)
    assert abs(int(decoded[2, 10, 5, 0]) - 200) < 12 and int(decoded[2, 10, 35, 0]) < 12


def _job(tmp_path, frames=3):
    job = tmp_path / "job"
    (job / "frames").mkdir(parents=True)
    g = body_gaussians(3000, generator=torch.Generator().manual_seed(0), scale_range=(0.015, 0.03))
    for i in range(frames):
        save_ply(g.replace(means=g.means + torch.tensor([0.1 * i, 0.0, 0.0])), job / "frames" / f"frame_{i:06d}.ply",
                 binding=False)
    (job / "result.json").write_text(json.dumps({"fps": 12}))
    return job, g


def test_cli_render_one_camera_for_all_frames(tmp_path):
    job, g = _job(tmp_path)
    framing = frame_subject(g.means, width=48, height=64)
    cams = orbit_cameras(framing, num_frames=1, width=48, height=64)
    save_cameras(cams, tmp_path / "cam.json")
    out = tmp_path / "out"
    assert main(["render", "--frames", str(job), "--cameras", str(tmp_path / "cam.json"), "--out", str(out),
                 "--backend", "torch"]) == 0
    pngs = sorted(out.glob("frame_*.png"))
    assert [p.name for p in pngs] == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    img = [np.asarray(Image.open(p)) for p in pngs]
    assert img[0].shape == (64, 48, 3)
    # white background at the corner, the figure in the middle, and it moves right (+X) from frame to frame
    assert (img[0][0, 0] == 255).all() and img[0][32, 24].mean() < 200
    cols = [np.nonzero((im.mean(-1) < 200).any(0))[0].mean() for im in img]
    assert cols[0] < cols[1] < cols[2]
    assert len(json.loads((out / "cameras.json").read_text())["frames"]) == 3
    assert (out / "contact_sheet.png").is_file() and (out / "video.mp4").stat().st_size > 0


def test_cli_render_camera_count_mismatch_is_exit_2(tmp_path, capsys):
    job, g = _job(tmp_path, frames=2)
    cams = orbit_cameras(frame_subject(g.means), num_frames=3, width=16, height=16)
    save_cameras(cams, tmp_path / "cams.json")
    assert main(["render", "--frames", str(job / "frames"), "--cameras", str(tmp_path / "cams.json"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "one per frame (2), got 3" in capsys.readouterr().err


def test_render_turntable_writes_the_folder_and_turns(tmp_path):
    from backend.render.sequence import render_turntable

    g = body_gaussians(2000, generator=torch.Generator().manual_seed(1), scale_range=(0.015, 0.03))
    paths = render_turntable([g] * 4, tmp_path / "turntable", width=40, height=56, fps=8)
    cams = json.loads(paths["cameras"].read_text())["frames"]
    assert len(cams) == 4 and len(sorted((tmp_path / "turntable").glob("frame_*.png"))) == 4
    eyes = np.array([np.array(c["world_from_camera"])[:3, 3] for c in cams])
    assert eyes[0, 1] < -0.5 and eyes[1, 0] > 0.5 and eyes[2, 1] > 0.5  # −Y, then +X, then +Y (counter-clockwise)
    sheet = np.asarray(Image.open(paths["contact_sheet"]))
    assert sheet.shape[0] > 56 and (sheet < 200).any()
