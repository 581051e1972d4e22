"""Crash: kill -9 the server during a job, restart it on the same jobs folder and port. The running job is
reported interrupted, finished jobs are intact, no partial result is served, and the same client object
reconnects by itself."""

from __future__ import annotations

import time

import pytest

from backend.wire import protocol
from backend.wire.client import Client, ServiceError, ServiceTimeout

from .conftest import tiny_motion

pytestmark = pytest.mark.e2e


def test_kill_during_a_job_then_restart(server_process, tmp_path):
    jobs = tmp_path / "jobs"
    server = server_process(jobs)
    client = Client(server.endpoint, timeout_s=20)
    finished = client.submit({"motion": tiny_motion(4), "gaussians": 800, "seed": 2})
    assert client.wait(finished, timeout_s=120)["state"] == "done"
    before = dict(client.fetch_result(finished))

    running = client.submit({"motion": tiny_motion(3000), "gaussians": 300, "seed": 3})
    queued = client.submit({"motion": tiny_motion(3), "gaussians": 300, "seed": 4})
    deadline = time.monotonic() + 120
    while client.status(running)["stage"] != "export":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # well inside the export: frames are being written to the temporary folder
    partial = [p for p in (jobs / running).iterdir() if p.name.startswith(".output")]
    assert partial, "expected the pipeline's temporary output folder while the job runs"
    server.kill()  # SIGKILL: no cleanup at all
    assert not (jobs / running / "output").exists()

    with pytest.raises(ServiceTimeout):
        client.status(running, timeout_s=0.5)
    restarted = server_process(jobs, port=server.port)
    assert restarted.endpoint == server.endpoint

    # the same client object talks to the new server (it recreated its socket after the timeout)
    status = client.status(running)
    assert status["state"] == "interrupted" and "stopped" in status["error"]
    with pytest.raises(ServiceError, match="no result"):
        client.result_chunk(running)
    assert sorted(p.name for p in (jobs / running).iterdir()) == ["inputs", "spec.json", "state.json"]

    assert client.status(finished)["state"] == "done"
    after = dict(client.fetch_result(finished))
    assert sorted(after) == sorted(before)
    for index in before:
        for name in protocol.GAUSSIAN_FIELDS:
            assert after[index][name].tobytes() == before[index][name].tobytes()

    # a job that was only queued is run after the restart
    assert client.wait(queued, timeout_s=120)["state"] == "done"
    states = {job["job"]: job["state"] for job in client.jobs()}
    assert states == {finished: "done", running: "interrupted", queued: "done"}
    client.close()
    assert restarted.stop() == 0
