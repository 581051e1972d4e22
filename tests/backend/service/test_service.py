"""The service in this process with the real pipeline: submit, progress, status, list, cancel, results,
validation errors that name the field, handler errors that never kill the server."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from backend.wire import protocol
from backend.wire.client import Client, ServiceError
from backend.gaussians import load_ply

from .conftest import tiny_motion

pytestmark = pytest.mark.e2e


def _job(frames: int = 4, gaussians: int = 500, seed: int = 0) -> dict:
    return {"motion": tiny_motion(frames, seed), "gaussians": gaussians, "seed": seed}


def test_submit_progress_status_result(local_server):
    server = local_server()
    with Client(server.endpoint, timeout_s=30) as client:
        hello = client.hello()
        assert hello["protocol_version"] == 1 and hello["devices"] == ["cpu"] and "default" in hello["body_models"]
        job = client.submit(_job(frames=6))
        seen = []
        status = client.wait(job, timeout_s=60, on_progress=seen.append)
        assert status["state"] == "done" and status["fraction"] == 1.0, status
        stages = [m.header["stage"] for m in seen if m.header.get("state") == "running" and m.header["stage"]]
        assert {"body", "reconstruct", "export"} <= set(stages)
        assert [m.header["state"] for m in seen][-1] == "done"
        fractions = [m.header["fraction"] for m in seen]
        assert fractions == sorted(fractions)

        header, frames = client.result_chunk(job, start=2, count=3, canonical=True)
        assert (header["start"], header["stop"], header["total"]) == (2, 5, 6)
        assert header["result"]["frames"] == 6 and header["result"]["gaussians"] == 500
        out = server.store.output_dir(job)
        for index, arrays in frames.items():
            if index == "canonical":
                continue
            expected = load_ply(out / "frames" / f"frame_{index:06d}.ply")
            for name in protocol.GAUSSIAN_FIELDS:
                assert np.array_equal(arrays[name], getattr(expected, name).numpy())
        canonical = load_ply(out / "canonical.ply")
        assert np.array_equal(frames["canonical"]["skin_weights"], canonical.skin_weights.numpy())
        everything = dict(client.fetch_result(job, frames_per_chunk=4))
        assert sorted(everything) == list(range(6))
        assert [j["job"] for j in client.jobs()] == [job]


def test_body_model_message(local_server):
    from backend.body import load_body_model

    server = local_server()
    body = load_body_model("default")
    with Client(server.endpoint, timeout_s=60) as client:
        reply = client.body_model()
        betas = np.linspace(-1, 1, 10).astype(np.float32)
        shaped = client.body_model(betas=betas)
        with pytest.raises(ServiceError, match="'name'"):
            client.body_model("smplx-from-somewhere")
        with pytest.raises(ServiceError, match="betas"):
            client.body_model(betas=np.zeros((2, 3), np.float32))
    assert reply.header["up"] == "Y"
    assert reply.header["parents"] == list(body.parents) and reply.header["joint_names"] == list(body.joint_names)
    assert reply.arrays["faces"].dtype == np.int32
    np.testing.assert_array_equal(reply.arrays["faces"], body.faces.numpy())
    np.testing.assert_array_equal(reply.arrays["skin_weights"], body.skin_weights.numpy())
    np.testing.assert_array_equal(reply.arrays["rest_vertices"], body.rest_vertices().numpy())
    np.testing.assert_allclose(shaped.arrays["rest_joints"], body.rest_joints(np.asarray(betas)).numpy())
    assert not np.allclose(shaped.arrays["rest_vertices"], reply.arrays["rest_vertices"])


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda s: s.update(gaussians=0), "'gaussians'"),
    (lambda s: s.update(gaussians=10_000_000), "'gaussians'"),
    (lambda s: s.update(gaussians="many"), "'gaussians'"),
    (lambda s: s.update(seed=-1), "seed"),
    (lambda s: s.update(quality="ultra"), "quality"),
    (lambda s: s.update(prior="wan-giant"), "'prior'"),
    (lambda s: s.update(body="/etc/passwd"), "'body'"),
    (lambda s: s.update(reference_frame=99), "reference_frame"),
    (lambda s: s.update(colour="red"), "colour"),
    (lambda s: s.update(sampler="fast"), "sampler"),
    (lambda s: s.update(sampler_settings={"steps": 0}), "sampler_settings.steps"),
    (lambda s: s.update(sampler_settings={"gamma": "half"}), "sampler_settings.gamma"),
    (lambda s: s.update(import_gaussians="/tmp/x.ply"), "import_gaussians"),
    (lambda s: s["motion"].update(pose_body=np.zeros((4, 62), np.float32)), "motion.pose_body"),
    (lambda s: s["motion"].update(trans=np.zeros((5, 3), np.float32)), "motion.trans"),
    (lambda s: s["motion"].update(root_orient=np.full((4, 3), np.nan, np.float32)), "motion.root_orient"),
    (lambda s: s["motion"].update(betas=np.zeros((4, 3), np.float32)), "motion.betas"),
    (lambda s: s["motion"].update(trans=np.zeros((4, 3), np.int32)), "motion.trans"),
    (lambda s: s["motion"].update(fps=-3.0), "'fps'"),
    (lambda s: s["motion"].update(root_orient=np.zeros((20_001, 3), np.float32),
                                  pose_body=np.zeros((20_001, 63), np.float32),
                                  trans=np.zeros((20_001, 3), np.float32)), "frames"),
])
def test_submit_validation_names_the_field(local_server, mutate, needle):
    server = local_server(max_frames=20_000)
    spec = _job()
    mutate(spec)
    with Client(server.endpoint, timeout_s=30) as client:
        with pytest.raises(ServiceError) as info:
            client.submit(spec)
        assert needle in str(info.value)
        assert client.jobs() == []
    assert server.store.ids() == []


def test_submit_with_image_bytes(local_server):
    server = local_server()
    with Client(server.endpoint, timeout_s=30) as client:
        with pytest.raises(ServiceError, match="'image'"):
            client.submit(_job(), image=b"GIF89a....")
        with pytest.raises(ServiceError, match="'image'"):
            client.submit(_job(), image=b"\x89PNG\r\n\x1a\ntruncated")
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
        # Reconstruction from a photo may not be built yet: either the job runs, or it fails with a message.
        job = client.submit(_job(), image=buffer.getvalue())
        status = client.wait(job, timeout_s=60)
    assert (server.store.job_dir(job) / "inputs" / "image.png").read_bytes() == buffer.getvalue()
    assert status["state"] == "done" or (status["state"] == "failed" and status["error"])


def test_cancel_running_job_within_two_seconds(local_server):
    server = local_server()
    with Client(server.endpoint, timeout_s=30) as client:
        job = client.submit(_job(frames=3000, gaussians=300))
        deadline = time.monotonic() + 60
        while client.status(job)["stage"] != "export":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        asked = time.monotonic()
        reply = client.cancel(job)
        assert reply["cancel_requested"] is True
        status = client.wait(job, timeout_s=10, poll_s=0.05)
        took = time.monotonic() - asked
        assert status["state"] == "cancelled" and took < 2.0, (status, took)
        with pytest.raises(ServiceError, match="no result"):
            client.result_chunk(job)
    folder = server.store.job_dir(job)
    assert sorted(p.name for p in folder.iterdir()) == ["inputs", "spec.json", "state.json"]
    assert server.store.state(job)["state"] == "cancelled"


def test_cancel_queued_job_and_queue_order(local_server):
    server = local_server()
    with Client(server.endpoint, timeout_s=30) as client:
        first = client.submit(_job(frames=1500, gaussians=300))
        second = client.submit(_job())
        assert client.status(second)["state"] == "queued"
        assert client.cancel(second)["state"] == "cancelled"
        client.cancel(first)
        assert client.wait(first, timeout_s=20)["state"] == "cancelled"
        assert client.status(second)["state"] == "cancelled"
        assert server.store.state(second)["started"] is None
        with pytest.raises(ServiceError, match="'job'"):
            client.cancel("no-such-job")
        with pytest.raises(ServiceError, match="'job'"):
            client.status("../../etc")


def test_handler_exception_becomes_an_error_reply(local_server):
    server = local_server()

    def broken(message, identity):
        raise RuntimeError("boom")

    server._handlers["list"] = broken
    with Client(server.endpoint, timeout_s=10) as client:
        with pytest.raises(ServiceError, match="internal error: RuntimeError: boom"):
            client.jobs()
        assert client.hello()["server"] == "ani3dhuman"


def test_failed_job_reports_the_error(local_server):
    from backend.core.errors import InputError

    def runner(spec, out_dir, progress, device):
        raise InputError("camera: expected width > 0")

    server = local_server(runner=runner)
    with Client(server.endpoint, timeout_s=10) as client:
        job = client.submit(_job())
        status = client.wait(job, timeout_s=10)
    assert status["state"] == "failed" and status["error"] == "camera: expected width > 0"


def test_preview_watchers_and_shutdown_interrupts(local_server):
    from backend.core.progress import ProgressEvent

    started = __import__("threading").Event()

    def runner(spec, out_dir, progress, device):
        preview = np.zeros((64, 96, 3), np.uint8)
        preview[:, :48] = 255
        progress(ProgressEvent("restore", 0.1, "sampling", 5.0, preview))
        started.set()
        while True:  # a long stage that checks in often
            progress(ProgressEvent("restore", 0.2, "sampling"))
            time.sleep(0.01)

    server = local_server(runner=runner)
    with Client(server.endpoint, timeout_s=10) as submitter, Client(server.endpoint, timeout_s=10) as watcher:
        job = submitter.submit(_job())
        assert started.wait(10)
        assert watcher.status(job, watch=True)["state"] == "running"
        time.sleep(0.3)
        watched = watcher.progress(0.5)
        assert watched and all(m.header["job"] == job for m in watched)
        previews = [m for m in submitter.progress(0.5) if "preview_png" in m.arrays]
        assert len(previews) == 1
        image = Image.open(io.BytesIO(previews[0].arrays["preview_png"].tobytes()))
        assert image.size == (96, 64) and image.getpixel((0, 0)) == (255, 255, 255)
        assert previews[0].header["eta_s"] == 5.0
        assert submitter.shutdown()["stopping"] is True
    server.stop()
    assert server.store.state(job)["state"] == "interrupted"
    assert not server.store.output_dir(job).exists()
