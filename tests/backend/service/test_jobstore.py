"""Job folders: atomic creation, state updates, recovery after a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.service.jobstore import JobStore, write_json_atomic

from .conftest import tiny_motion

pytestmark = pytest.mark.unit

PNG = b"\x89PNG\r\n\x1a\n" + b"rest"


def _create(store: JobStore, frames: int = 3, image: bytes | None = None) -> str:
    motion = tiny_motion(frames)
    fps = motion.pop("fps")
    return store.create({"gaussians": 100, "seed": 1, "motion": {"fps": fps}}, motion, fps, image)


def test_create_writes_a_complete_folder(tmp_path):
    store = JobStore(tmp_path)
    job = _create(store, image=PNG)
    folder = tmp_path / job
    assert sorted(p.name for p in folder.iterdir()) == ["inputs", "spec.json", "state.json"]
    assert (folder / "inputs" / "image.png").read_bytes() == PNG
    assert store.state(job)["state"] == "queued"
    spec = store.job_spec_dict(job)
    expected = tiny_motion(3)
    for name in ("root_orient", "pose_body", "trans", "betas"):
        np.testing.assert_array_equal(spec["motion"][name], expected[name])
    assert spec["motion"]["fps"] == 30.0 and spec["image"] == str(folder / "inputs" / "image.png")
    assert spec["gaussians"] == 100 and store.ids() == [job]
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_update_state_is_atomic_and_checked(tmp_path):
    store = JobStore(tmp_path)
    job = _create(store)
    store.update_state(job, state="running", stage="export")
    assert store.state(job)["stage"] == "export"
    with pytest.raises(ValueError, match="state"):
        store.update_state(job, state="exploded")
    assert store.state(job)["state"] == "running"
    assert not [p for p in (tmp_path / job).iterdir() if p.name.startswith(".")]


def test_recover_repairs_what_a_killed_server_left(tmp_path):
    store = JobStore(tmp_path)
    running, finished_late, done, queued, broken = (_create(store) for _ in range(5))
    for job in (running, finished_late):
        store.update_state(job, state="running")
    # a partial output being written (the pipeline's temporary sibling) and a half-written state file
    (tmp_path / running / ".output.tmp-123-0" / "frames").mkdir(parents=True)
    (tmp_path / running / ".state.json.tmp-99-ab").write_text("{")
    for job in (finished_late, done):
        (tmp_path / job / "output").mkdir()
        write_json_atomic(tmp_path / job / "output" / "result.json", {"frames": 3})
    store.update_state(done, state="done")
    store.update_state(broken, state="done")  # claims done, but its output is gone
    (tmp_path / ".tmp-20990101-000000-deadbeef").mkdir()  # a job folder that was never renamed into place

    ids, requeue = store.recover()

    assert ids == sorted([running, finished_late, done, queued, broken]) and requeue == [queued]
    assert store.state(running)["state"] == "interrupted"
    assert sorted(p.name for p in (tmp_path / running).iterdir()) == ["inputs", "spec.json", "state.json"]
    assert store.state(finished_late)["state"] == "done"
    assert store.state(done)["state"] == "done" and store.result(done) == {"frames": 3}
    assert store.state(broken)["state"] == "failed"
    assert not (tmp_path / ".tmp-20990101-000000-deadbeef").exists()


def test_ids_are_validated(tmp_path):
    store = JobStore(tmp_path)
    for bad in ("../etc", ".hidden", "", "a/b", "x" * 65):
        assert not store.exists(bad)
        with pytest.raises(KeyError):
            store.job_dir(bad)


def test_spec_json_has_no_arrays(tmp_path):
    store = JobStore(tmp_path)
    job = _create(store)
    spec = json.loads((tmp_path / job / "spec.json").read_text())
    assert spec["motion"] == "inputs/motion.npz" and spec["image"] is None


def test_recover_requeues_a_running_job_that_left_a_fit_checkpoint(tmp_path):
    from backend.service.jobstore import CHECKPOINT_ENTRY

    store = JobStore(tmp_path)
    resumable, plain = _create(store), _create(store)
    for job in (resumable, plain):
        store.update_state(job, state="running")
        (tmp_path / job / ".output.tmp-7-0").mkdir()
    checkpoint = tmp_path / resumable / CHECKPOINT_ENTRY / "fit"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.pt").write_bytes(b"x")
    (tmp_path / plain / CHECKPOINT_ENTRY).mkdir()  # a stale checkpoint of a job that is not resumed below
    store.update_state(plain, state="cancelled")
    ids, queued = store.recover()
    assert queued == [resumable]
    assert store.state(resumable)["state"] == "queued"
    assert (checkpoint / "state.pt").read_bytes() == b"x"
    assert not (tmp_path / resumable / ".output.tmp-7-0").exists()
    assert store.state(plain)["state"] == "cancelled" and not (tmp_path / plain / CHECKPOINT_ENTRY).exists()
