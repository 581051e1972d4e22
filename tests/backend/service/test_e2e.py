"""End to end over TCP loopback: a server subprocess, a client submitting a small job, progress, and result
frames bit-identical to ``ani3dhuman animate`` run on the same inputs. Also the add-on's copy of the client,
run in the Blender environment (numpy < 2), against the same server."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from backend.wire import protocol
from backend.wire.client import Client
from backend.gaussians import load_ply

from .conftest import REPO, service_env, tiny_motion

pytestmark = pytest.mark.e2e

FRAMES, GAUSSIANS, SEED = 5, 2000, 7

ADDON_SCRIPT = r"""
import shutil, sys, pathlib, numpy as np
pkg = pathlib.Path(sys.argv[1]) / "addon_pkg"
pkg.mkdir()
(pkg / "__init__.py").write_text("")
for name in ("protocol.py", "client.py"):  # what scripts/vendor_wire.py puts into the add-on
    shutil.copy(pathlib.Path(sys.argv[2]) / "backend" / "wire" / name, pkg / name)
sys.path.insert(0, sys.argv[1])
from addon_pkg.client import Client
assert "torch" not in sys.modules and "backend" not in sys.modules
with Client(sys.argv[3], timeout_s=30) as client:
    assert client.hello()["server"] == "ani3dhuman"
    frames = dict(client.fetch_result(sys.argv[4], frames_per_chunk=2))
    body = client.body_model()
np.savez(sys.argv[5], numpy_version=np.__version__, faces=body.arrays["faces"],
         **{f"{i}.{k}": v for i, f in frames.items() for k, v in f.items()})
"""


def test_service_result_is_bit_identical_to_cli_animate(server_process, tmp_path):
    motion = tiny_motion(FRAMES, seed=11)
    motion_file = tmp_path / "motion.npz"
    np.savez(motion_file, root_orient=motion["root_orient"], pose_body=motion["pose_body"],
             trans=motion["trans"], betas=motion["betas"], mocap_frame_rate=np.float32(motion["fps"]))
    cli = subprocess.run([sys.executable, "-m", "backend", "animate", "--motion", str(motion_file),
                          "--out", str(tmp_path / "cli_out"), "--gaussians", str(GAUSSIANS), "--seed", str(SEED)],
                         cwd=REPO, env=service_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr

    server = server_process(tmp_path / "jobs")
    progress = []
    with Client(server.endpoint, timeout_s=30) as client:
        job = client.submit({"motion": motion, "gaussians": GAUSSIANS, "seed": SEED})
        status = client.wait(job, timeout_s=300, on_progress=progress.append)
        assert status["state"] == "done", status
        frames = dict(client.fetch_result(job, frames_per_chunk=2))
        header, _ = client.result_chunk(job, 0, 0)
    running = [m for m in progress if m.header.get("state") == "running" and m.header.get("stage")]
    assert len(running) >= 3, [m.header for m in progress]
    assert header["result"]["frames"] == FRAMES and header["total"] == FRAMES

    cli_frames = sorted((tmp_path / "cli_out" / "frames").glob("frame_*.ply"))
    assert len(cli_frames) == FRAMES and sorted(frames) == list(range(FRAMES))
    for index, path in enumerate(cli_frames):
        expected = load_ply(path)
        for name in protocol.GAUSSIAN_FIELDS:
            got, want = frames[index][name], getattr(expected, name).numpy()
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), f"frame {index} {name} differs from ani3dhuman animate"
    # the job folder's own files are byte-identical to the CLI's, too
    job_frames = sorted((tmp_path / "jobs" / job / "output" / "frames").glob("frame_*.ply"))
    assert [p.read_bytes() for p in job_frames] == [p.read_bytes() for p in cli_frames]

    blender_python = REPO / ".venv-blender" / "bin" / "python"
    if not blender_python.exists():
        pytest.skip("no .venv-blender: the add-on copy of the client was not exercised")
    out = tmp_path / "addon_frames.npz"
    run = subprocess.run([str(blender_python), "-c", ADDON_SCRIPT, str(tmp_path), str(REPO), server.endpoint,
                          job, str(out)], env=service_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    with np.load(out) as addon:
        assert str(addon["numpy_version"]).startswith("1.")
        assert addon["faces"].dtype == np.int32
        for index in range(FRAMES):
            for name in protocol.GAUSSIAN_FIELDS:
                assert addon[f"{index}.{name}"].tobytes() == frames[index][name].tobytes()
    assert server.stop() == 0
