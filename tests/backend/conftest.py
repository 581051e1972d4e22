"""Shared fixtures for the backend tests: tiny bodies and a synthetic SMPL model file."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def default_body():
    from backend.body import load_body_model

    return load_body_model("default")


def make_synthetic_smpl(path, seed: int = 0, num_vertices: int = 300) -> dict:
    """Write a synthetic model file in the SMPL .pkl format (plain dict, no chumpy) and return its dict.

    The geometry is a random blob around a 24-joint SMPL-like skeleton; weights favour nearby joints,
    shape and pose blend shapes are random but small. Good enough to check the arithmetic exactly.
    """
    rng = np.random.default_rng(seed)
    parents = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])
    joints = np.zeros((24, 3))
    for j in range(1, 24):
        joints[j] = joints[parents[j]] + rng.normal(0, 0.12, 3)
    owner = rng.integers(0, 24, num_vertices)
    v_template = joints[owner] + rng.normal(0, 0.03, (num_vertices, 3))
    distance = np.linalg.norm(v_template[:, None] - joints[None], axis=-1)
    weights = np.exp(-distance / 0.05)
    weights[weights < 1e-3 * weights.max(axis=1, keepdims=True)] = 0
    weights /= weights.sum(axis=1, keepdims=True)
    j_regressor = np.zeros((24, num_vertices))
    for j in range(24):
        members = np.where(owner == j)[0]
        if len(members) == 0:
            members = np.argsort(distance[:, j])[:3]
        j_regressor[j, members] = 1.0 / len(members)
    kintree = np.stack([np.where(parents < 0, 4294967295, parents), np.arange(24)]).astype(np.int64)
    faces = rng.integers(0, num_vertices, (num_vertices * 2, 3))
    data = {
        "v_template": v_template,
        "shapedirs": rng.normal(0, 0.01, (num_vertices, 3, 10)),
        "posedirs": rng.normal(0, 0.002, (num_vertices, 3, 207)),
        "J_regressor": j_regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": faces.astype(np.int64),
    }
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return data


@pytest.fixture
def synthetic_smpl_path(tmp_path):
    path = tmp_path / "SMPL_SYNTHETIC.pkl"
    make_synthetic_smpl(path)
    return path


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)
