"""Garment cloth dynamics: one cloth mesh, newton's VBD solver, kinematic capsule colliders; no self-contact.

Pinned vertices (where the garment is attached) follow the rigidly skinned garment exactly; the rest hangs under
gravity and air drag against capsules that follow the bones. Z up (Blender), metres, seconds. One newton model
per call, ``settings.substeps`` steps per motion frame with targets and capsules interpolated linearly; CPU
(warp's LLVM) or CUDA. Kernels compile once per machine into ``cache_dir()`` (``warm_up`` does it ahead of
time, ``kernels_cached`` tells); newton and warp are imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ClothPreset:
    """A fabric.

    Attributes:
        name: Preset name.
        density: Mass per area [kg/m²].
        stretch_stiffness: Membrane stiffness [N/m] (both Lamé parameters of VBD's Neo-Hookean membrane).
        bend_stiffness: Bending rigidity [N·m]; turned into per-edge dihedral stiffness from the rest mesh, so
            the fabric bends alike at any mesh resolution.
        damping: Stiffness-proportional damping time [s] of stretch and bend (kd = damping × k).
        friction: Coulomb friction coefficient against the body.
        air_drag: Damping rate [1/s] of the cloth's velocity along its own normal: air resistance per unit
            mass, so larger for light fabric. Motion within the cloth's plane (a twirling skirt's spin) is not
            damped by it: air resists what the fabric pushes, not what slides along it.
    """

    name: str
    density: float
    stretch_stiffness: float
    bend_stiffness: float
    damping: float
    friction: float
    air_drag: float


# Bending rigidity: Kawabata-style values (chiffon ~0.002, cotton ~0.1, denim ~1 gf·cm²/cm ≈ 1e-4 N·m), bending
# lengths (B / (density·g))^(1/3) 0.7, 1.9, 3.1 cm. Air drag: linearised drag per unit mass. Damping stays small:
# VBD's damping term stiffens its local solves and, at 5 iterations, lets the cloth stretch more.
CLOTH_PRESETS: dict[str, ClothPreset] = {
    "light": ClothPreset("light", density=0.06, stretch_stiffness=1.5e3, bend_stiffness=2.0e-7,
                         damping=1.0e-4, friction=0.3, air_drag=2.0),
    "medium": ClothPreset("medium", density=0.15, stretch_stiffness=5.0e3, bend_stiffness=1.0e-5,
                          damping=2.0e-4, friction=0.5, air_drag=0.6),
    "heavy": ClothPreset("heavy", density=0.35, stretch_stiffness=1.5e4, bend_stiffness=1.0e-4,
                         damping=5.0e-4, friction=0.7, air_drag=0.25),
}
DEFAULT_PRESET = "medium"


@dataclass(frozen=True)
class SimSettings:
    """Solver settings.

    Attributes:
        substeps: Solver steps per motion frame.
        iterations: VBD iterations per substep.
        contact_margin: Distance [m] kept between cloth vertices and capsule surfaces (the particle radius).
        gravity: Gravity along world Z [m/s²].
        device: Warp device (``"cpu"``, ``"cuda:0"``); None: ``"cuda:0"`` when warp sees CUDA, else ``"cpu"``.
    """

    substeps: int = 10
    iterations: int = 5
    contact_margin: float = 0.005
    gravity: float = -9.81
    device: str | None = None


@dataclass(frozen=True)
class Capsules:
    """Kinematic colliders per frame (numpy arrays or torch tensors).

    Attributes:
        a: Segment start points, world metres. [F, C, 3]
        b: Segment end points, world metres. [F, C, 3]
        radius: Radius per capsule [m]. [C]
    """

    a: np.ndarray
    b: np.ndarray
    radius: np.ndarray


@dataclass(frozen=True)
class ClothResult:
    """What ``simulate_cloth`` returns.

    Attributes:
        vertices: Cloth vertex world positions per input frame (frame 0 is the start pose). [F, M, 3] float32
        device: Warp device it ran on.
        seconds: ``build`` (newton model), ``compile`` (solver setup + first substep: kernel compile or load),
            ``simulate`` (the other substeps), ``per_frame`` (``simulate`` per motion frame).
        max_penetration: Deepest free cloth vertex inside any capsule over all frames [m] (0 if none).
        max_stretch: Largest edge length / rest length over all frames.
    """

    vertices: np.ndarray
    device: str
    seconds: dict = field(default_factory=dict)
    max_penetration: float = 0.0
    max_stretch: float = 1.0


_COMPILING = "compiling cloth kernels (first run, about a minute on a CPU) ..."
_CONTACT_KE = 1.0e5  # cloth-body contact stiffness [N/m]: ~0.2 mm into the margin under a taut skirt
_CONTACT_KD = 1.0e-2  # cloth-body contact damping [N·s/m]


def cache_dir() -> Path:
    """Per-user kernel cache: ``$ANI3DHUMAN_CACHE/warp``, else ``<platform cache>/ani3dhuman/warp``."""
    if os.environ.get("ANI3DHUMAN_CACHE"):
        return Path(os.environ["ANI3DHUMAN_CACHE"]).expanduser() / "warp"
    base = {"win32": os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local",
            "darwin": Path.home() / "Library" / "Caches"}.get(sys.platform)
    return Path(base or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ani3dhuman" / "warp"


def configure_warp() -> None:
    """Point warp's kernel cache at ``cache_dir()`` (also when warp was initialised elsewhere first), quiet its log
    (warnings and errors only), initialise it. Idempotent."""
    import ctypes.util

    import warp as wp
    import warp._src.build as wp_build
    import warp._src.context as wp_context

    path = cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    wp.config.log_level = max(wp.config.log_level, wp.LOG_WARNING)
    if wp.config.kernel_cache_dir != str(path):
        wp.config.kernel_cache_dir = str(path)
        if wp_context.runtime is not None:
            wp_build.init_kernel_cache(str(path))
    if wp_context.runtime is not None:
        return
    if sys.platform == "win32" or ctypes.util.find_library("cuda") is not None:
        return wp.init()
    sys.stderr.flush()  # no CUDA driver: warp's native code would print a warning on stderr, noise here
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        wp.init()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def kernels_cached(device: str | None = None) -> bool:
    """Whether a successful simulation on this kind of device (default: ``SimSettings().device``) left compiled
    kernels in ``cache_dir()`` (a marker per newton/warp version and device kind)."""
    return _marker(device).is_file()


def simulate_cloth(rest_vertices, faces, pinned, pinned_positions, capsules: Capsules, fps: float,
                   preset: ClothPreset = CLOTH_PRESETS[DEFAULT_PRESET], settings: SimSettings = SimSettings(),
                   report: Callable[[float, str], None] | None = None) -> ClothResult:
    """Simulate a garment over a motion; the result's ``vertices[0] == pinned_positions[0]``.

    Args:
        rest_vertices: The garment at rest; defines rest lengths and angles (not the start pose). [M, 3]
        faces: Triangles. [T, 3] int
        pinned: Vertices attached to the body; they follow ``pinned_positions`` exactly. [M] bool
        pinned_positions: Per-frame target of every vertex (the rigidly skinned garment); the cloth starts
            from frame 0 with zero velocity. [F, M, 3]
        capsules: Colliders with F frames, moved kinematically (end points interpolated inside a frame).
        fps: Motion frames per second.
        preset: The fabric.
        settings: Solver settings.
        report: Optional ``report(fraction, message)``: once before the first step (says it is compiling kernels when
            ``kernels_cached()`` is False), then after every frame.

    Raises:
        ValueError: One line naming the argument: a wrong shape, a non-finite value, F < 1.
        FloatingPointError: The simulation diverged (never seen at the presets and default settings).
    """
    rest, tris, pin, targets, cap_a, cap_b, radius = _validate(rest_vertices, faces, pinned, pinned_positions,
                                                               capsules, fps, settings)
    configure_warp()
    import newton  # noqa: F401  (import time is not build time)
    import warp as wp

    device = _resolve_device(settings.device)
    frames, substeps = targets.shape[0], settings.substeps
    out = np.empty_like(targets)
    out[0] = targets[0]
    if frames == 1:  # nothing to simulate
        return ClothResult(out, device, dict.fromkeys(("build", "compile", "simulate", "per_frame"), 0.0),
                           _max_penetration(out[:, ~pin], cap_a, cap_b, radius), 1.0)
    cached = kernels_cached(device)
    if report is not None:
        report(0.0, _COMPILING if not cached else f"cloth: {frames - 1} frames, {len(rest)} vertices")
    t0 = time.perf_counter()
    sim = _Sim(rest, tris, pin, targets[0], cap_a, cap_b, radius, preset, settings, device)
    t1 = time.perf_counter()
    dt = 1.0 / (fps * substeps)
    for f in range(1, frames):
        for s in range(substeps):
            sim.step(targets[f - 1], targets[f], cap_a[f - 1], cap_b[f - 1], cap_a[f], cap_b[f],
                     s / substeps, (s + 1) / substeps, dt)
            if f == 1 and s == 0:
                wp.synchronize_device(device)
                t_first = time.perf_counter()
        out[f] = sim.state_in.particle_q.numpy()  # a copy into float32
        if not np.isfinite(out[f]).all():
            raise FloatingPointError(f"cloth simulation diverged at frame {f} (non-finite vertex positions)")
        if report is not None:
            rate = (f - 1.0 / substeps) / max(time.perf_counter() - t_first, 1e-9)  # after the (compiling) first step
            report(f / (frames - 1), f"cloth: frame {f}/{frames - 1} ({rate:.1f} fps)")
    t2 = time.perf_counter()
    if not cached:
        with contextlib.suppress(OSError):  # best effort: the next run only reports "compiling" again
            _marker(device).write_text(json.dumps({"device": device, "time": time.time()}) + "\n")
    seconds = {"build": t1 - t0 - sim.setup_seconds, "compile": sim.setup_seconds + t_first - t1,
               "simulate": t2 - t_first}
    seconds["per_frame"] = seconds["simulate"] / max(frames - 1 - 1.0 / substeps, 1.0 / substeps)
    return ClothResult(out, device, seconds, _max_penetration(out[:, ~pin], cap_a, cap_b, radius),
                       _max_stretch(out, rest, tris))


def warm_up(device: str | None = None) -> float:
    """Simulate a tiny pinned cone around one capsule for 2 frames so the kernels land in the cache; seconds taken."""
    start, k = time.perf_counter(), np.arange(8)
    rest = np.concatenate([np.stack([r * np.cos(k * np.pi / 4), r * np.sin(k * np.pi / 4), np.full(8, z)], 1)
                           for r, z in ((0.15, 1.0), (0.2, 0.8))]).astype(np.float32)
    faces = np.concatenate([np.stack([k, k + 8, (k + 1) % 8 + 8], 1), np.stack([k, (k + 1) % 8 + 8, (k + 1) % 8], 1)])
    a = np.array([[[0.0, 0.0, 0.95]]] * 2, np.float32)
    caps = Capsules(a=a, b=a - np.array([0.0, 0.0, 0.3], np.float32), radius=np.array([0.08], np.float32))
    simulate_cloth(rest, faces, np.arange(16) < 8, np.stack([rest, rest]), caps, fps=24.0,
                   settings=SimSettings(device=device))
    return time.perf_counter() - start


class _Sim:
    """The newton model, solver, collision pipeline and the two states of one simulation."""

    def __init__(self, rest, faces, pinned, start, cap_a, cap_b, radius, preset, settings, device):
        import newton
        import warp as wp

        self.wp, self.device, self.air_drag = wp, device, preset.air_drag
        builder = newton.ModelBuilder(up_axis=newton.Axis.Z, gravity=(0.0, 0.0, float(settings.gravity)))
        builder.add_cloth_mesh(pos=wp.vec3(0.0, 0.0, 0.0), rot=wp.quat_identity(), scale=1.0,
                               vel=wp.vec3(0.0, 0.0, 0.0), vertices=rest.tolist(), indices=faces.ravel().tolist(),
                               density=preset.density, tri_ke=preset.stretch_stiffness,
                               tri_ka=preset.stretch_stiffness, tri_kd=preset.damping * preset.stretch_stiffness,
                               edge_ke=0.0, edge_kd=0.0, particle_radius=settings.contact_margin)
        ke = _edge_bend_stiffness(rest, np.asarray(builder.edge_indices, np.int64).reshape(-1, 4),
                                  preset.bend_stiffness)
        builder.edge_bending_properties = [(k, preset.damping * k) for k in ke.tolist()]
        for i in np.flatnonzero(pinned).tolist():  # pinned: not integrated; positions written every substep
            builder.particle_flags[i] = int(builder.particle_flags[i]) & ~int(newton.ParticleFlags.ACTIVE)
        cfg = newton.ModelBuilder.ShapeConfig(density=0.0, ke=_CONTACT_KE, kd=_CONTACT_KD, mu=preset.friction,
                                              margin=0.0, has_shape_collision=False, has_particle_collision=True)
        # newton's capsule axis is its local +Z; a bone keeps its length: one half height per capsule.
        half = 0.5 * np.linalg.norm(cap_b - cap_a, axis=-1).mean(axis=0)
        self.axis = _axis(cap_a[0], cap_b[0])
        self.rot = _transport(np.tile([0.0, 0.0, 0.0, 1.0], (len(radius), 1)), np.array([0.0, 0.0, 1.0]), self.axis)
        for c in range(len(radius)):
            body = builder.add_body(mass=0.0, is_kinematic=True, label=f"capsule{c}")
            builder.add_shape_capsule(body, radius=float(radius[c]), half_height=float(half[c]), cfg=cfg)
        builder.color(include_bending=True)
        self.model = builder.finalize(device=device)
        self.model.soft_contact_ke, self.model.soft_contact_kd = _CONTACT_KE, _CONTACT_KD
        self.model.soft_contact_mu = preset.friction
        t = time.perf_counter()
        self.solver = newton.solvers.SolverVBD(self.model, iterations=settings.iterations,
                                               integrate_with_external_rigid_solver=True)
        self.pipeline = self.contacts = None
        if len(radius):
            gap = max(0.01, 2.0 * settings.contact_margin)  # detection slack: a capsule moves ~1 cm per substep
            self.pipeline = newton.CollisionPipeline(self.model, soft_contact_gap=gap,
                                                     include_static_kinematic_pairs=False)
            self.contacts = self.pipeline.contacts()
        self.state_in, self.state_out, self.control = self.model.state(), self.model.state(), self.model.control()
        self.state_in.particle_q.assign(start)  # velocities start at zero
        self.pinned = pinned
        self.pin_index = wp.array(np.flatnonzero(pinned).astype(np.int32), dtype=wp.int32, device=device)
        self.pin_target = wp.zeros(int(pinned.sum()), dtype=wp.vec3, device=device)
        self.kernels = _kernels()
        start_idx, incident = _incidence(faces, len(rest))
        self.tri_flat = wp.array(faces.astype(np.int32).ravel(), dtype=wp.int32, device=device)
        self.incident_start = wp.array(start_idx, dtype=wp.int32, device=device)
        self.incident = wp.array(incident, dtype=wp.int32, device=device)
        self.setup_seconds = time.perf_counter() - t

    def step(self, target0, target1, a0, b0, a1, b1, alpha0, alpha1, dt):
        """One substep from ``alpha0`` to ``alpha1`` of the way between two frames."""
        wp = self.wp
        if self.pin_index.shape[0]:  # pinned vertices go to their end-of-substep targets before the solve
            self.pin_target.assign((1.0 - alpha1) * target0[self.pinned] + alpha1 * target1[self.pinned])
            wp.launch(self.kernels["pin"], dim=self.pin_index.shape[0], inputs=[self.pin_index, self.pin_target],
                      outputs=[self.state_in.particle_q], device=self.device)
        if self.pipeline is not None:  # kinematic bodies: previous pose in, current pose out (friction velocity)
            self.state_in.body_q.assign(self._poses(a0, b0, a1, b1, alpha0, advance=False))
            self.state_out.body_q.assign(self._poses(a0, b0, a1, b1, alpha1, advance=True))
            self.pipeline.collide(self.state_in, self.contacts)
        self.solver.step(self.state_in, self.state_out, self.control, self.contacts, dt)
        if self.air_drag > 0:
            wp.launch(self.kernels["drag"], dim=self.model.particle_count,
                      inputs=[float(np.exp(-self.air_drag * dt)), self.state_out.particle_q, self.tri_flat,
                              self.incident_start, self.incident],
                      outputs=[self.state_out.particle_qd], device=self.device)
        self.state_in, self.state_out = self.state_out, self.state_in

    def _poses(self, a0, b0, a1, b1, alpha, advance):
        """Capsule body transforms ``[C, 7]`` (position, quaternion xyzw) at ``alpha``; rotations are parallel-
        transported from the last substep, so the finite-difference velocity newton uses for friction is smooth."""
        a, b = (1.0 - alpha) * a0 + alpha * a1, (1.0 - alpha) * b0 + alpha * b1
        axis = _axis(a, b)
        rot = _transport(self.rot, self.axis, axis)
        if advance:
            self.rot, self.axis = rot, axis
        return np.concatenate([0.5 * (a + b), rot], axis=1).astype(np.float32)


def _kernels() -> dict:
    """This module's two warp kernels (write pinned positions, air drag along the normal); defined once per
    process."""
    if "cache" not in _kernels.__dict__:
        import warp as wp

        @wp.kernel(enable_backward=False, module="ani3dhuman_cloth")
        def set_pinned(index: wp.array[wp.int32], target: wp.array[wp.vec3], q: wp.array[wp.vec3]):
            q[index[wp.tid()]] = target[wp.tid()]

        @wp.kernel(enable_backward=False, module="ani3dhuman_cloth")
        def damp_velocity(factor: float, q: wp.array[wp.vec3], tri: wp.array[wp.int32],
                          start: wp.array[wp.int32], incident: wp.array[wp.int32], qd: wp.array[wp.vec3]):
            i = wp.tid()
            n = wp.vec3(0.0, 0.0, 0.0)
            for k in range(start[i], start[i + 1]):  # the vertex normal: sum of its triangles' area normals
                t = incident[k]
                a = q[tri[3 * t]]
                n = n + wp.cross(q[tri[3 * t + 1]] - a, q[tri[3 * t + 2]] - a)
            length = wp.length(n)
            if length > 0.0:
                n = n / length
                v = qd[i]
                qd[i] = v - (1.0 - factor) * wp.dot(v, n) * n

        _kernels.cache = {"pin": set_pinned, "drag": damp_velocity}
    return _kernels.cache


def _incidence(faces: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Triangles around each vertex, CSR: (start [M + 1], triangle indices [3T]), in a fixed order."""
    owner = faces.ravel()
    order = np.argsort(owner, kind="stable")
    start = np.zeros(count + 1, np.int32)
    np.cumsum(np.bincount(owner, minlength=count), out=start[1:])
    return start, (order // 3).astype(np.int32)


def _resolve_device(device: str | None) -> str:
    import warp as wp

    return str(wp.get_device(device)) if device else "cuda:0" if wp.get_cuda_device_count() > 0 else "cpu"


def _marker(device: str | None) -> Path:
    if device is None:
        configure_warp()
        device = _resolve_device(None)
    kind = "cpu" if str(device).startswith("cpu") else "cuda"
    versions = "-".join(importlib.metadata.version(p) for p in ("newton", "warp-lang"))
    return cache_dir() / f"ani3dhuman-cloth-{versions}-{kind}.ok"


def _as_array(x, name: str, dtype) -> np.ndarray:
    try:  # numpy, lists, torch tensors on any device
        return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: not a numeric array ({error})") from None


def _validate(rest_vertices, faces, pinned, pinned_positions, capsules, fps, settings):
    """Checked numpy copies: rest [M, 3], faces [T, 3] int64, pinned [M] bool, targets [F, M, 3], a, b, radius."""
    def check(ok, name: str, expected: str, got=None):
        if not ok:
            raise ValueError(f"{name}: expected {expected}" + (f", got {list(got.shape)}" if got is not None else ""))

    rest = _as_array(rest_vertices, "rest_vertices", np.float32)
    check(rest.ndim == 2 and rest.shape[1] == 3 and rest.shape[0] >= 3, "rest_vertices", "[M, 3], M >= 3", rest)
    m = rest.shape[0]
    tris = _as_array(faces, "faces", np.float64)
    check(tris.ndim == 2 and tris.shape[1] == 3 and tris.shape[0] >= 1, "faces", "[T, 3], T >= 1", tris)
    check(np.isfinite(tris).all() and (tris == np.round(tris)).all() and tris.min() >= 0 and tris.max() < m,
          "faces", f"integer vertex indices in [0, {m})")
    pin = _as_array(pinned, "pinned", np.float64)
    check(pin.shape == (m,) and np.isin(pin, (0.0, 1.0)).all(), "pinned", f"[{m}] bool", pin)
    targets = _as_array(pinned_positions, "pinned_positions", np.float32)
    check(targets.ndim == 3 and targets.shape[0] >= 1 and targets.shape[1:] == (m, 3), "pinned_positions",
          f"[F, {m}, 3], F >= 1", targets)
    check(isinstance(capsules, Capsules), "capsules", f"a Capsules, not {type(capsules).__name__}")
    a, b = _as_array(capsules.a, "capsules.a", np.float32), _as_array(capsules.b, "capsules.b", np.float32)
    radius = _as_array(capsules.radius, "capsules.radius", np.float32)
    check(radius.ndim == 1, "capsules.radius", "[C]", radius)
    for name, arr in (("capsules.a", a), ("capsules.b", b)):
        check(arr.shape == (targets.shape[0], radius.shape[0], 3), name, f"[F, C, 3] = [{targets.shape[0]}, "
              f"{radius.shape[0]}, 3]", arr)
    for name, arr in (("rest_vertices", rest), ("pinned_positions", targets), ("capsules.a", a),
                      ("capsules.b", b), ("capsules.radius", radius)):
        check(np.isfinite(arr).all(), name, "finite values")
    check((radius > 0).all(), "capsules.radius", "values > 0")
    check(not isinstance(fps, bool) and isinstance(fps, (int, float, np.number)) and np.isfinite(fps) and fps > 0,
          "fps", f"a positive number, not {fps!r}")
    check(settings.substeps >= 1 and settings.iterations >= 1 and settings.contact_margin > 0, "settings",
          "substeps, iterations >= 1 and contact_margin > 0")
    return rest, tris.astype(np.int64), pin.astype(bool), targets, a, b, radius


def _edge_bend_stiffness(rest: np.ndarray, edges: np.ndarray, rigidity: float) -> np.ndarray:
    """Per-edge dihedral stiffness ``[E]`` for bending rigidity [N·m] on the rest mesh; ``edges [E, 4]``: (opposite 0,
    opposite 1, v0, v1), boundary edges (-1 opposite) get 0. newton's edge energy ``½ ke L θ²`` equals the continuum
    ``½ B κ² (A1 + A2) / 3`` with ``θ = κ (h1 + h2) / 3`` (centroid distance) when ``ke = ¾ B L / (A1 + A2)``."""
    ke = np.zeros(len(edges))
    inner = (edges[:, 0] >= 0) & (edges[:, 1] >= 0)
    o0, o1, v0, v1 = (rest[edges[inner, j]].astype(np.float64) for j in range(4))
    area = 0.5 * sum(np.linalg.norm(np.cross(v0 - o, v1 - o), axis=1) for o in (o0, o1))
    ke[inner] = 0.75 * rigidity * np.linalg.norm(v1 - v0, axis=1) / np.maximum(area, 1e-12)
    return ke


def _axis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unit segment directions ``[C, 3]`` (+Z for a degenerate segment)."""
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    n = np.linalg.norm(d, axis=-1, keepdims=True)
    return np.where(n > 1e-9, d / np.maximum(n, 1e-12), np.array([0.0, 0.0, 1.0]))


def _transport(rot: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Quaternions ``rot [C, 4]`` (x, y, z, w) turned by the smallest rotation taking axes ``old`` to ``new [C, 3]``."""
    old = np.broadcast_to(old, new.shape)
    dot = np.sum(old * new, axis=-1)
    q = np.concatenate([np.cross(old, new), (1.0 + dot)[:, None]], axis=1)
    flip = dot < -1.0 + 1e-9  # opposite axes: a half turn about a perpendicular axis
    other = np.where(np.abs(old[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    q[flip] = np.concatenate([np.cross(old, other), np.zeros((len(q), 1))], axis=1)[flip]
    x1, y1, z1, w1 = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    x2, y2, z2, w2 = np.asarray(rot, np.float64).T
    out = np.stack([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                    w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2, w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2], axis=1)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _max_penetration(points: np.ndarray, a: np.ndarray, b: np.ndarray, radius: np.ndarray) -> float:
    """Deepest point inside any capsule over all frames [m], 0 if none: ``points [F, N, 3]``, ``a, b [F, C, 3]``."""
    deepest = 0.0
    for f in range(points.shape[0] if points.shape[1] and radius.shape[0] else 0):
        p, s, d = points[f].astype(np.float64), a[f].astype(np.float64), (b[f] - a[f]).astype(np.float64)
        t = np.einsum("ncj,cj->nc", p[:, None] - s[None], d) / np.maximum(np.sum(d * d, axis=1), 1e-18)
        closest = s[None] + np.clip(t, 0.0, 1.0)[..., None] * d[None]
        deepest = max(deepest, float((radius[None] - np.linalg.norm(p[:, None] - closest, axis=-1)).max()))
    return deepest


def _max_stretch(vertices: np.ndarray, rest: np.ndarray, faces: np.ndarray) -> float:
    """Largest edge length / rest length over all frames; ``vertices [F, M, 3]``."""
    edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1), axis=0)
    rest_len = np.linalg.norm(rest[edges[:, 0]] - rest[edges[:, 1]], axis=1)
    edges = edges[rest_len > 1e-9]
    length = np.linalg.norm(vertices[:, edges[:, 0]] - vertices[:, edges[:, 1]], axis=-1)
    return float((length / rest_len[rest_len > 1e-9]).max()) if len(edges) else 1.0
