"""Cloth dynamics (backend/dynamics/simulate.py): newton's VBD cloth against kinematic capsules, on the CPU.

The slow tests share module-scoped runs; with the kernels cached (``cache_dir()``) the file takes about 15 s on a
2-core VM; the first run on a machine compiles the warp kernels first (about 40 s).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.dynamics.simulate import (
    CLOTH_PRESETS,
    DEFAULT_PRESET,
    Capsules,
    SimSettings,
    cache_dir,
    kernels_cached,
    simulate_cloth,
    warm_up,
)

REPO = Path(__file__).resolve().parents[3]
FPS = 24.0
MARGIN = SimSettings().contact_margin
STILL, SPIN = 12, 24  # skirt: frames held still, then frames of spinning


def cone(around: int, down: int, top: tuple[float, float], hem: tuple[float, float]):
    """Open cone about Z from ring (radius, z) ``top`` to ring ``hem``.

    Returns vertices [M, 3], faces [T, 3], vertex index per row and angle [down + 1, around] (row 0: the top).
    """
    t = np.linspace(0.0, 1.0, down + 1)[:, None]
    angle = np.arange(around) * 2 * np.pi / around
    r, z = top[0] + (hem[0] - top[0]) * t, np.repeat(top[1] + (hem[1] - top[1]) * t, around, axis=1)
    verts = np.stack([r * np.cos(angle), r * np.sin(angle), z], axis=-1).reshape(-1, 3).astype(np.float32)
    rows = np.arange((down + 1) * around).reshape(down + 1, around)
    v00, v01 = rows[:-1], np.roll(rows[:-1], -1, axis=1)
    v10, v11 = rows[1:], np.roll(rows[1:], -1, axis=1)
    faces = np.concatenate([np.stack([v00, v10, v11], -1), np.stack([v00, v11, v01], -1)]).reshape(-1, 3)
    return verts, faces, rows


def grid(nx: int, ny: int, spacing: float):
    """Flat sheet in the XY plane at z = 1: vertices [nx·ny, 3] (row-major in x), faces [T, 3]."""
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    verts = np.stack([i.ravel() * spacing, j.ravel() * spacing, np.ones(nx * ny)], 1).astype(np.float32)
    v = (i[:-1, :-1] * ny + j[:-1, :-1]).ravel()
    faces = np.concatenate([np.stack([v, v + ny, v + ny + 1], 1), np.stack([v, v + ny + 1, v + 1], 1)])
    return verts, faces


def turn_z(angles: np.ndarray) -> np.ndarray:
    """Rotations about Z. [F] -> [F, 3, 3]"""
    c, s, o, i = np.cos(angles), np.sin(angles), np.zeros_like(angles), np.ones_like(angles)
    return np.stack([np.stack([c, -s, o], -1), np.stack([s, c, o], -1), np.stack([o, o, i], -1)], -2)


def capsule_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Signed distance of each point to the nearest capsule surface. points [N, 3], a, b [C, 3], radius [C] -> [N]"""
    d = b - a
    t = np.clip(np.einsum("ncj,cj->nc", points[:, None] - a[None], d) / (d * d).sum(1), 0.0, 1.0)
    return (np.linalg.norm(points[:, None] - (a[None] + t[..., None] * d[None]), axis=-1) - radius).min(axis=1)


def skirt_inputs():
    """A flared skirt (waist r 0.15 at z 1.0, hem r 0.45 at z 0.75) pinned at the waist, two leg capsules and a
    pelvis capsule. Still for STILL frames, then the body turns about Z, accelerating evenly to 180° over SPIN
    frames (2π rad/s at the end). The flare matters: a narrow cone (hem r 0.25 at z 0.6) already hangs at its rest
    shape, so it can neither drop nor flare without stretching; this one falls into folds and opens again."""
    rest, faces, rows = cone(24, 8, (0.15, 1.0), (0.45, 0.75))
    pinned = np.zeros(len(rest), bool)
    pinned[rows[0]] = True
    u = np.arange(1, SPIN + 1) / SPIN
    turn = turn_z(np.concatenate([np.zeros(STILL), np.pi * u**2]))
    targets = np.einsum("fij,mj->fmi", turn, rest).astype(np.float32)
    a = np.array([[0.09, 0.0, 0.85], [-0.09, 0.0, 0.85], [-0.05, 0.0, 0.9]])
    b = np.array([[0.09, 0.0, 0.1], [-0.09, 0.0, 0.1], [0.05, 0.0, 0.9]])
    capsules = Capsules(a=np.einsum("fij,cj->fci", turn, a).astype(np.float32),
                        b=np.einsum("fij,cj->fci", turn, b).astype(np.float32),
                        radius=np.array([0.06, 0.06, 0.1], np.float32))
    return rest, faces, pinned, targets, capsules, rows


@pytest.fixture(scope="module")
def skirt():
    """Two runs of the skirt, the first from numpy (with a progress log), the second from torch tensors."""
    rest, faces, pinned, targets, caps, rows = skirt_inputs()
    cached_before = kernels_cached("cpu")
    log = []
    first = simulate_cloth(rest, faces, pinned, targets, caps, FPS, settings=SimSettings(device="cpu"),
                           report=lambda fraction, message: log.append((fraction, message)))
    torch_caps = Capsules(*(torch.from_numpy(x) for x in (caps.a, caps.b, caps.radius)))
    second = simulate_cloth(torch.from_numpy(rest), torch.from_numpy(faces), torch.from_numpy(pinned),
                            torch.from_numpy(targets), torch_caps, FPS, CLOTH_PRESETS[DEFAULT_PRESET],
                            SimSettings(device="cpu"))
    return {"inputs": (rest, faces, pinned, targets, caps, rows), "first": first, "second": second,
            "log": log, "cached_before": cached_before}


@pytest.mark.unit
def test_cache_dir_honours_ani3dhuman_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ANI3DHUMAN_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "warp"
    if sys.platform.startswith("linux"):
        monkeypatch.delenv("ANI3DHUMAN_CACHE")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_dir() == tmp_path / "xdg" / "ani3dhuman" / "warp"


@pytest.mark.unit
def test_importing_the_module_leaves_newton_and_warp_unloaded():
    code = "import sys, backend.dynamics.simulate; print('newton' in sys.modules, 'warp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _bad_inputs(name):
    rest, faces, rows = cone(8, 2, (0.15, 1.0), (0.25, 0.8))
    pinned = np.zeros(len(rest), bool)
    pinned[rows[0]] = True
    targets = np.repeat(rest[None], 3, axis=0)
    a = np.zeros((3, 1, 3), np.float32)
    args = {"rest_vertices": rest, "faces": faces, "pinned": pinned, "pinned_positions": targets,
            "capsules": Capsules(a, a + 0.1, np.array([0.05], np.float32)), "fps": FPS}
    bad = {
        "rest_vertices": rest[:, :2],
        "faces": faces + len(rest),
        "pinned": pinned[:-1],
        "pinned_positions": targets[:0],
        "pinned_positions/nan": np.where(np.arange(3)[:, None, None] == 2, np.nan, targets),
        "pinned_positions/m": targets[:, 1:],
        "capsules": (a, a, np.ones(1)),
        "capsules.a": Capsules(a[:2], a, np.array([0.05])),
        "capsules.radius": Capsules(a, a + 0.1, np.array([-0.05])),
        "fps": 0.0,
    }[name]
    args[name.split("/")[0].split(".")[0]] = bad
    return args


@pytest.mark.unit
@pytest.mark.parametrize("name", ["rest_vertices", "faces", "pinned", "pinned_positions", "pinned_positions/nan",
                                  "pinned_positions/m", "capsules", "capsules.a", "capsules.radius", "fps"])
def test_bad_inputs_raise_one_line_naming_the_argument(name):
    with pytest.raises(ValueError) as error:
        simulate_cloth(**_bad_inputs(name))
    message = str(error.value)
    assert message.startswith(name.split("/")[0] + ":") and "\n" not in message


@pytest.mark.slow
def test_skirt_result_is_finite_float32_per_input_frame(skirt):
    result, targets = skirt["first"], skirt["inputs"][3]
    assert result.vertices.shape == targets.shape and result.vertices.dtype == np.float32
    assert np.isfinite(result.vertices).all() and result.device == "cpu"
    assert set(result.seconds) == {"build", "compile", "simulate", "per_frame"}
    assert all(np.isfinite(v) and v >= 0 for v in result.seconds.values())


@pytest.mark.slow
def test_pinned_vertices_follow_their_targets_exactly(skirt):
    pinned, targets = skirt["inputs"][2], skirt["inputs"][3]
    vertices = skirt["first"].vertices
    np.testing.assert_array_equal(vertices[0], targets[0])  # the cloth starts from frame 0
    np.testing.assert_array_equal(vertices[:, pinned], targets[:, pinned])


@pytest.mark.slow
def test_cloth_stays_outside_the_capsules_and_does_not_overstretch(skirt):
    rest, faces, pinned, _, caps, _ = skirt["inputs"]
    result = skirt["first"]
    free = result.vertices[:, ~pinned].astype(np.float64)
    distance = np.stack([capsule_distance(free[f], caps.a[f], caps.b[f], caps.radius) for f in range(len(free))])
    assert distance.min() < 3 * MARGIN  # the skirt does touch the legs while it hangs and spins
    assert max(0.0, -distance.min()) <= result.max_penetration + 1e-6
    assert result.max_penetration <= MARGIN + 0.002
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    ratio = np.linalg.norm(np.diff(result.vertices[:, edges], axis=2)[:, :, 0], axis=-1) / np.linalg.norm(
        np.diff(rest[edges], axis=1)[:, 0], axis=-1)
    assert ratio.max() == pytest.approx(result.max_stretch, rel=1e-5)
    assert result.max_stretch < 1.5


@pytest.mark.slow
def test_skirt_drops_when_still_and_flares_when_spun(skirt):
    rows, vertices = skirt["inputs"][5], skirt["first"].vertices
    hem = vertices[:, rows[-1]]
    radius, height = np.linalg.norm(hem[..., :2], axis=-1).mean(axis=1), hem[..., 2].mean(axis=1)
    assert height[STILL - 1] < height[0] - 0.05  # gravity: the flared cloth falls into folds
    assert radius[-1] > radius[STILL - 1] + 0.01  # the spin throws the hem out again


@pytest.mark.slow
def test_reruns_are_bit_identical_and_torch_inputs_work(skirt):
    first, second = skirt["first"], skirt["second"]
    assert np.array_equal(first.vertices, second.vertices)
    assert (first.max_penetration, first.max_stretch) == (second.max_penetration, second.max_stretch)


@pytest.mark.slow
def test_progress_reports_every_frame(skirt):
    log, frames = skirt["log"], len(skirt["inputs"][3])
    assert log[0][0] == 0.0 and ("compiling cloth kernels" in log[0][1]) == (not skirt["cached_before"])
    assert len(log) == frames and log[-1][0] == 1.0
    assert log[-1][1].startswith(f"cloth: frame {frames - 1}/{frames - 1} (") and log[-1][1].endswith(" fps)")
    assert [f for f, _ in log] == sorted(f for f, _ in log)
    assert kernels_cached("cpu")


@pytest.fixture(scope="module")
def swings():
    """A 15 × 27 cm sheet pinned along one short edge, released horizontal: light and heavy fabric."""
    rest, faces = grid(6, 10, 0.03)
    pinned = rest[:, 1] == 0.0
    frames = 48
    targets = np.repeat(rest[None], frames, axis=0)
    none = np.zeros((frames, 0, 3), np.float32)
    caps = Capsules(none, none, np.zeros(0, np.float32))
    runs = {name: simulate_cloth(rest, faces, pinned, targets, caps, FPS, CLOTH_PRESETS[name]).vertices
            for name in ("light", "heavy")}
    return runs, rest[:, 1] == rest[:, 1].max()


@pytest.mark.slow
def test_a_horizontal_sheet_pinned_at_one_edge_falls(swings):
    runs, free_edge = swings
    for vertices in runs.values():
        assert vertices[6, free_edge, 2].mean() < 1.0 - 0.1  # 0.25 s: well down
        assert vertices[:, free_edge, 2].min() < 1.0 - 0.2  # it swings through hanging straight down


@pytest.mark.slow
def test_light_fabric_loses_its_swing_to_the_air_sooner_than_heavy(swings):
    runs, free_edge = swings  # hanging straight down, the free edge is at y = 0
    amplitude = {name: np.abs(v[-24:, free_edge, 1].mean(axis=1)).max() for name, v in runs.items()}
    assert amplitude["light"] < 0.9 * amplitude["heavy"], amplitude  # drag acts along the normal only


@pytest.mark.slow
def test_a_sheet_falling_on_a_lying_capsule_rests_a_margin_above_it():
    """Capsule along X (newton's capsules are along local Z: this checks the orientation) under a falling sheet."""
    rest, faces = grid(11, 11, 0.03)
    rest = rest - np.array([0.15, 0.15, 0.0], np.float32)
    frames = 18
    a = np.tile(np.array([[[-0.3, 0.0, 0.9]]], np.float32), (frames, 1, 1))
    caps = Capsules(a, a * np.array([-1.0, 1.0, 1.0], np.float32), np.array([0.05], np.float32))
    result = simulate_cloth(rest, faces, np.zeros(len(rest), bool), np.repeat(rest[None], frames, axis=0), caps, FPS)
    gap = capsule_distance(result.vertices[-1].astype(np.float64), a[0], caps.b[0], caps.radius)
    assert 0.5 * MARGIN < gap.min() < 1.5 * MARGIN and result.max_penetration == 0.0


@pytest.mark.slow
def test_single_frame_and_warm_up():
    rest, faces, _ = cone(8, 2, (0.15, 1.0), (0.25, 0.8))
    a = np.zeros((1, 1, 3), np.float32)
    caps = Capsules(a, a + 0.1, np.ones(1))
    result = simulate_cloth(rest, faces, np.zeros(len(rest), bool), rest[None], caps, FPS)
    np.testing.assert_array_equal(result.vertices, rest[None])
    assert warm_up("cpu") > 0 and kernels_cached("cpu")
