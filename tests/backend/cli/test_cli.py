"""The command line: the job folder contract, bad input -> exit 2 with one line, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from backend.cli import main
from backend.gaussians import load_ply

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def motion_file(tmp_path_factory, default_body):
    from backend.motion.builtin import builtin_motion

    path = tmp_path_factory.mktemp("motion") / "walk.npz"
    builtin_motion("walk", default_body, frames=4).save(path)
    return path


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def test_animate_writes_the_job_folder(tmp_path, motion_file, capsys):
    out = tmp_path / "job"
    code, _ = run_cli(["animate", "--motion", str(motion_file), "--out", str(out), "--gaussians", "500"], capsys)
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["schema_version"] == 1 and result["status"] == "complete"
    assert result["frames"] == 4 and result["gaussians"] == 500 and result["fps"] == 24.0
    assert set(result["timings"]) >= {"body", "reconstruct", "skin+export"}
    frames = sorted(p.name for p in (out / "frames").iterdir())
    assert frames == [f"frame_{i:06d}.ply" for i in range(4)]
    canonical = load_ply(out / "canonical.ply")
    assert canonical.num_gaussians == 500 and canonical.skin_weights.shape == (500, 54)
    frame = load_ply(out / "frames" / "frame_000003.ply")
    assert frame.skin_weights is None and frame.num_gaussians == 500
    # the walk moves the subject: frames differ from the canonical rest pose (Y-up) and stand in Z-up world
    assert frame.means[:, 2].max() > 1.5 and frame.means[:, 2].min() > -0.05
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_same_seed_same_bytes(tmp_path, motion_file, capsys):
    for name in ("a", "b"):
        assert run_cli(["animate", "--motion", str(motion_file), "--out", str(tmp_path / name), "--gaussians", "300",
                        "--seed", "7"], capsys)[0] == 0
    for rel in ("canonical.ply", "frames/frame_000002.ply"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def _bad_motion(tmp_path, **changes):
    data = {"root_orient": np.zeros((3, 3)), "pose_body": np.zeros((3, 63)), "trans": np.zeros((3, 3))}
    data.update(changes)
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: _bad_motion(t, pose_body=np.full((3, 63), np.nan)), "pose_body.*NaN"),
        (lambda t: _bad_motion(t, pose_body=np.zeros((3, 60))), "pose_body"),
        (lambda t: _bad_motion(t, pose_body=None), "pose_body"),
        (lambda t: _bad_motion(t, root_orient=np.zeros((0, 3)), pose_body=np.zeros((0, 63)),
                               trans=np.zeros((0, 3))), "zero frames"),
        (lambda t: t / "missing.npz", "not found"),
    ],
)
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, capsys, make, message):
    import re

    motion = make(tmp_path)
    out = tmp_path / "out"
    code, err = run_cli(["animate", "--motion", str(motion), "--out", str(out)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_unwritable_out_dir(tmp_path, motion_file, capsys):
    if os.geteuid() == 0:
        target = "/proc/ani3dhuman-test/out"  # even root cannot create folders in /proc
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "out")
    code, err = run_cli(["animate", "--motion", str(motion_file), "--out", target], capsys)
    assert code == 2 and "out:" in err and len(err.strip().splitlines()) == 1


def test_refuses_to_replace_a_non_job_folder(tmp_path, motion_file, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    code, err = run_cli(["animate", "--motion", str(motion_file), "--out", str(out)], capsys)
    assert code == 2 and "refusing" in err
    assert (out / "thesis.tex").read_text() == "keep me"


def test_console_script_entry_point(tmp_path, motion_file):
    proc = subprocess.run([sys.executable, "-m", "backend", "animate", "--motion", str(motion_file),
                           "--out", str(tmp_path / "o"), "--gaussians", "-5"], capture_output=True, text=True)
    assert proc.returncode == 2 and "gaussians" in proc.stderr


def test_animate_with_renders_writes_previews(tmp_path, motion_file, capsys):
    import imageio.v3 as iio

    out = tmp_path / "job"
    code, _ = run_cli(["animate", "--motion", str(motion_file), "--out", str(out), "--gaussians", "3000",
                       "--renders"], capsys)
    assert code == 0
    for name in ("animation", "turntable"):
        folder = out / "renders" / name
        assert (folder / "video.mp4").stat().st_size > 0 and (folder / "contact_sheet.png").is_file()
        assert json.loads((folder / "cameras.json").read_text())["frames"]
        image = iio.imread(folder / "frame_000001.png")
        assert image.shape == (480, 360, 3)
        # the subject is there (not a blank frame): many pixels differ from the background
        background = np.array([0.12, 0.13, 0.16]) * 255
        assert (np.abs(image - background).sum(-1) > 30).mean() > 0.02


def test_reconstruction_flags_reach_the_job(tmp_path, motion_file):
    from backend.cli import build_parser
    from backend.cli.animate import spec_from_args
    from backend.motion import load_motion

    args = build_parser().parse_args(["animate", "--motion", str(motion_file), "--out", str(tmp_path / "o"),
                                      "--align", "--import-pose", "apose", "--reference-pose", str(motion_file)])
    spec = spec_from_args(args, load_motion(motion_file))
    assert spec.extras == {"align": True, "import_pose": "apose", "reference_pose": str(motion_file.resolve())}
    args = build_parser().parse_args(["animate", "--motion", str(motion_file), "--out", str(tmp_path / "o"),
                                      "--reference-pose", str(tmp_path / "missing.npz")])
    with pytest.raises(FileNotFoundError, match="reference-pose"):
        spec_from_args(args, load_motion(motion_file))


@pytest.mark.parametrize("args, field", [
    (["--garment", "skirt", "--waist-height", "0.5", "--hem-height", "0.9"], "garment.hem_height"),
    (["--waist-height", "nan"], "garment.waist_height"),
    (["--hem-height", "7"], "garment.hem_height"),
])
def test_a_bad_garment_override_is_one_line_and_exit_code_2(tmp_path, motion_file, capsys, args, field):
    code, err = run_cli(["animate", "--motion", str(motion_file), "--out", str(tmp_path / "job"), *args], capsys)
    assert code == 2 and field in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "job").exists()


def test_dynamics_cloth_without_a_garment_warns_and_keeps_the_rigid_layer(tmp_path, motion_file, capsys):
    out = tmp_path / "job"
    code, _ = run_cli(["animate", "--motion", str(motion_file), "--out", str(out), "--gaussians", "300",
                       "--dynamics", "cloth", "--cloth-preset", "heavy"], capsys)
    result = json.loads((out / "result.json").read_text())
    assert code == 0 and result["dynamics"]["mode"] == "none" and not (out / "cloth.npz").exists()
    assert any("no loose garment" in w for w in result["warnings"])
    assert result["settings"]["dynamics"] == "cloth" and result["settings"]["cloth_preset"] == "heavy"
