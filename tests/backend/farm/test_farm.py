"""Scale-out on a private local Ray (2 CPUs, loopback only, its own temp folder, no dashboard, shut down at the
end): batches and the service on Ray write the same bytes as ``ani3dhuman animate``; cancel, a killed worker,
resume, a failing job; a round's restorations as parallel tasks give the serial run's bytes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.cli import main
from backend.farm import JobFailed, RayExecutor, RayRestorer, RaySettings, connect, shutdown
from backend.motion.builtin import builtin_motion
from backend.stages import JobSpec, animate

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY = {"rounds": 1, "trajectories_per_round": 2, "iterations": 6, "video_frames": 5, "width": 32, "height": 48,
        "restore_steps": 2, "spatial_resolution": 8, "temporal_resolution": 5, "features": 4, "multires": [1]}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    import ray

    info = connect(RaySettings(address="local", num_cpus=2, temp_dir=str(tmp_path_factory.mktemp("ray"))))
    assert info["started"]
    yield ray
    shutdown()
    assert not ray.is_initialized()


def _frames(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".ply", ".npz", ".safetensors", ".png")}


def test_local_cluster_listens_on_loopback_only(ray_cluster):
    nodes = ray_cluster.nodes()
    assert len(nodes) == 1 and nodes[0]["NodeManagerAddress"] == "127.0.0.1"
    assert ray_cluster.cluster_resources()["CPU"] == 2


def _write_jobs(tmp_path: Path, default_body, extra: list[dict] | None = None) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    builtin_motion("walk", default_body, frames=6).save(folder / "walk.npz")
    builtin_motion("twirl", default_body, frames=5).save(folder / "twirl.npz")
    jobs = [{"name": f"job_{i}", "motion": ["walk.npz", "twirl.npz"][i % 2], "gaussians": 1500, "seed": i}
            for i in range(4)] + (extra or [])
    path = folder / "jobs.json"
    path.write_text(json.dumps({"jobs": jobs}))
    return path


def test_batch_on_ray_writes_animates_bytes_resumes_and_fails_alone(ray_cluster, tmp_path, default_body, capsys):
    jobs = _write_jobs(tmp_path, default_body, [{"name": "broken", "motion": "walk.npz", "gaussians": 500,
                                                 "image": "not_a_photo.png", "camera": "cam.json",
                                                 "reference_frame": 0}])
    (jobs.parent / "not_a_photo.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (jobs.parent / "cam.json").write_text(json.dumps({"width": 64, "height": 64, "fx": 60, "fy": 60, "cx": 32,
                                                      "cy": 32, "world_from_camera": np.eye(4).tolist()}))
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--out", str(out), "--ray", "local", "--max-parallel", "2"]) == 1
    table = capsys.readouterr().out
    assert table.count(" done ") == 4 and "broken" in table and "failed" in table, table
    assert not (out / "broken").exists() and not list(out.glob(".broken*"))
    for i in range(4):  # the same bytes as `ani3dhuman animate` run serially in this process
        motion = jobs.parent / ["walk.npz", "twirl.npz"][i % 2]
        assert main(["animate", "--motion", str(motion), "--out", str(tmp_path / f"serial_{i}"), "--gaussians",
                     "1500", "--seed", str(i)]) == 0
        ours, theirs = _frames(out / f"job_{i}"), _frames(tmp_path / f"serial_{i}")
        assert ours and ours == theirs, f"job_{i}"
    # A re-run skips what finished and tries the failed job again.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("frame_000000.ply")}
    assert main(["batch", str(jobs), "--out", str(out), "--ray", "local"]) == 1
    table = capsys.readouterr().out
    assert table.count("skipped") == 4, table
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("frame_000000.ply")}


def test_bad_jobs_file_is_one_line_exit_2(tmp_path, default_body, capsys):
    jobs = _write_jobs(tmp_path, default_body, [{"name": "x", "motion": "walk.npz", "gausians": 10}])
    assert main(["batch", str(jobs), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "jobs[4] 'x'" in err and "gausians" in err, err
    jobs.write_text(json.dumps({"jobs": [{"name": "../up", "motion": "walk.npz"}]}))
    assert main(["batch", str(jobs), "--out", str(tmp_path / "out")]) == 2
    assert "folder name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def ray_server(tmp_path):
    """The service with ``--ray local`` (joining this module's cluster), in a thread of this process."""
    from backend.service import Server, ServerSettings

    server = Server(ServerSettings(endpoint="tcp://127.0.0.1:*", jobs_dir=tmp_path / "jobs", ray="local",
                                   ray_parallel=2)).start()
    yield server
    server.stop()


def test_service_on_ray_same_bytes_and_cancel(ray_cluster, tmp_path, default_body, ray_server):
    from backend.gaussians import load_ply
    from backend.wire import Client

    motion = builtin_motion("walk", default_body, frames=6)
    arrays = {k: v for k, v in motion.arrays().items() if v is not None}
    server = ray_server
    assert server.devices == ("ray-0", "ray-1")
    with Client(server.endpoint, timeout_s=30) as client:
        wire_motion = {**{k: np.asarray(v) for k, v in arrays.items() if k != "mocap_frame_rate"},
                       "fps": float(motion.fps)}
        ids = [client.submit({"motion": wire_motion, "gaussians": 1500, "seed": s}) for s in range(4)]
        for job, seed in zip(ids, range(4)):
            assert client.wait(job, timeout_s=300)["state"] == "done"
            frames = dict(client.fetch_result(job, frames_per_chunk=3))
            serial = tmp_path / f"serial_{seed}"
            animate(JobSpec(motion=motion, gaussians=1500, seed=seed), serial)
            for index, got in frames.items():
                want = load_ply(serial / "frames" / f"frame_{index:06d}.ply")
                np.testing.assert_array_equal(got["means"], want.means.numpy())
                np.testing.assert_array_equal(got["quats"], want.quats.numpy())
        # Cancel reaches the Ray task: a long job is stopped and leaves no output.
        long_motion = {**wire_motion, **{k: np.repeat(v, 80, axis=0) for k, v in wire_motion.items()
                                         if k not in ("fps", "betas")}}
        job = client.submit({"motion": long_motion, "gaussians": 200_000, "seed": 1})
        deadline = time.monotonic() + 120
        while client.status(job)["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.monotonic()
        assert client.cancel(job)["cancel_requested"]
        state = client.wait(job, timeout_s=60)
        assert state["state"] == "cancelled", state
        assert time.monotonic() - started < 15
        assert not server.store.is_complete(job)


def test_killed_worker_is_retried_once_then_the_job_fails(ray_cluster, tmp_path, default_body):
    # Long enough (≈ 1 s of work) that the kill lands while the job runs.
    spec = JobSpec(motion=builtin_motion("walk", default_body, frames=60), gaussians=30_000, seed=5).to_dict()

    def kill_first(info: dict) -> None:
        if info["attempt"] == 1:
            os.kill(info["pid"], signal.SIGKILL)

    result = RayExecutor(max_retries=1).run(spec, tmp_path / "retried", on_worker=kill_first)
    assert result["status"] == "complete" and (tmp_path / "retried" / "result.json").is_file()
    animate(JobSpec.from_dict(spec), tmp_path / "serial")
    assert _frames(tmp_path / "retried") == _frames(tmp_path / "serial")

    def kill_always(info: dict) -> None:
        os.kill(info["pid"], signal.SIGKILL)

    with pytest.raises(JobFailed, match="died"):
        RayExecutor(max_retries=1).run(spec, tmp_path / "dead", on_worker=kill_always)
    assert not (tmp_path / "dead").exists() and not list(tmp_path.glob(".dead*"))


def test_parallel_restorations_give_the_serial_bytes(ray_cluster, tmp_path, default_body):
    from backend.diffusion.wan_random import save_random_wan

    prior = save_random_wan(tmp_path / "tiny-t2v", arch="tiny", kind="t2v", seed=0)
    spec = JobSpec(motion=builtin_motion("walk", default_body, frames=9), gaussians=300, seed=3, prior=str(prior),
                   extras={"prior_preset": TINY})
    threads = torch.get_num_threads()
    animate(spec, tmp_path / "serial")
    seen = []
    restorer = RayRestorer(str(prior), threads=threads)
    original = restorer.restore_all

    def watched(jobs, report_for):
        seen.append(len(jobs))
        return original(jobs, report_for)

    restorer.restore_all = watched
    animate(spec, tmp_path / "ray", restorer=restorer)
    assert seen == [2]  # both trajectories of the round went out together
    ours, theirs = _frames(tmp_path / "ray"), _frames(tmp_path / "serial")
    assert len(ours) > 20 and ours == theirs
