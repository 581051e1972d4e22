"""The residual non-rigid field (docs/method.md §6): a HexPlane + small MLP heads -> Δposition, Δrotation, Δscale.

Six 2-D multi-resolution feature planes over the coordinate pairs of (x, y, z, t) — xy, xz, yz (space) and
xt, yt, zt (space-time) — are sampled bilinearly at a Gaussian's *canonical* position (normalised to [−1, 1] by
the field's bounding box) and the normalised animation time t ∈ [−1, 1]. As in K-Planes/4DGaussians the six
plane features are multiplied (Hadamard) per resolution and the resolutions are concatenated; a shared MLP and
one head per output decode them. The heads' last layers are zero-initialised, so a new field is exactly the
identity: Δp = 0, Δq = (1, 0, 0, 0), Δlog-scale = 0.

Applied in canonical space before skinning: ``mu(t) = LBS_t(mu_c + Δp)``, ``r(t) = q_blend ⊗ Δq ⊗ r_c``
(``space="posed"``: ``mu(t) = LBS_t(mu_c) + Δp``, ``r(t) = Δq ⊗ q_blend ⊗ r_c``).

The module only holds parameters; ``query_field`` / ``apply_residual`` are the pure functions.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.core.errors import InputError
from backend.core.rotations import quaternion_multiply

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "field.safetensors"
FIELD_FORMAT = "ani3dhuman-hexplane-field"
FIELD_FORMAT_VERSION = 1

# Coordinate pairs of the six planes; index 3 is time.
PLANE_PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


@dataclass(frozen=True)
class FieldConfig:
    """Shape of a residual field (4DGaussians defaults).

    Attributes:
        bounds: Canonical bounding box ``(xmin, ymin, zmin, xmax, ymax, zmax)`` mapped to [−1, 1]³.
        spatial_resolution: Base resolution of the spatial plane axes.
        temporal_resolution: Resolution of the time axis (not multiplied by ``multires``).
        features: Feature channels per plane.
        multires: Spatial resolution multipliers; one set of six planes each.
        hidden: MLP width.
        hidden_layers: Layers of the shared feature MLP (≥ 1).
        predict_scale: Also predict Δlog-scale.
        space: ``"canonical"`` (Δ applied before skinning) or ``"posed"`` (after).
        init_range: Spatial planes start uniform in this range (time planes start at 1, the identity of the
            Hadamard product).
    """

    bounds: tuple[float, float, float, float, float, float] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
    spatial_resolution: int = 64
    temporal_resolution: int = 25
    features: int = 32
    multires: tuple[int, ...] = (1, 2)
    hidden: int = 64
    hidden_layers: int = 1
    predict_scale: bool = False
    space: Literal["canonical", "posed"] = "canonical"
    init_range: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        if len(self.bounds) != 6:
            raise InputError(f"FieldConfig.bounds: expected 6 numbers, got {self.bounds!r}")
        lo, hi = self.bounds[:3], self.bounds[3:]
        if any(h <= l for l, h in zip(lo, hi)):
            raise InputError(f"FieldConfig.bounds: expected min < max on every axis, got {self.bounds!r}")
        for name in ("spatial_resolution", "temporal_resolution", "features", "hidden", "hidden_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (2 if "resolution" in name else 1):
                raise InputError(f"FieldConfig.{name}: expected a positive integer (resolutions ≥ 2), got {value!r}")
        if not self.multires or any(not isinstance(m, int) or m < 1 for m in self.multires):
            raise InputError(f"FieldConfig.multires: expected positive integers, got {self.multires!r}")
        if self.space not in ("canonical", "posed"):
            raise InputError(f"FieldConfig.space: expected 'canonical' or 'posed', got {self.space!r}")

    def to_dict(self) -> dict:
        return {"format": FIELD_FORMAT, "version": FIELD_FORMAT_VERSION, **asdict(self)}

    @staticmethod
    def from_dict(data: dict) -> FieldConfig:
        """Parse a config.json dictionary (InputError naming the field)."""
        if data.get("format") != FIELD_FORMAT:
            raise InputError(f"field config: format: expected {FIELD_FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != FIELD_FORMAT_VERSION:
            raise InputError(f"field config: version: expected {FIELD_FORMAT_VERSION}, got {data.get('version')!r}")
        known = {f for f in FieldConfig.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("bounds", "multires", "init_range"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return FieldConfig(**kwargs)

    @property
    def num_outputs(self) -> int:
        return 3 + 4 + (3 if self.predict_scale else 0)


def bounds_from_points(points: Tensor, margin: float = 0.1) -> tuple[float, ...]:
    """A field bounding box around canonical points, enlarged by ``margin`` × the extent per side. [N, 3]"""
    lo, hi = points.detach().min(0).values.double(), points.detach().max(0).values.double()
    pad = (hi - lo).clamp_min(1e-3) * margin
    return tuple(float(v) for v in torch.cat([lo - pad, hi + pad]))


class ResidualField(nn.Module):
    """Parameters of a HexPlane residual field (see the module docstring for the maths).

    Attributes:
        config: The field's FieldConfig.
        planes: ``len(multires) * 6`` planes, each ``[1, features, res_b, res_a]`` for the pair ``(a, b)``.
        trunk: The shared MLP's linear layers.
        heads: ``position`` (3), ``rotation`` (4) and optionally ``scale`` (3) heads, two layers each.
    """

    def __init__(self, config: FieldConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        generator = generator or torch.Generator().manual_seed(0)
        planes = []
        for mult in config.multires:
            for a, b in PLANE_PAIRS:
                res = [config.spatial_resolution * mult if k < 3 else config.temporal_resolution for k in (a, b)]
                if b == 3:  # space-time planes start at 1: the Hadamard product then equals the spatial part
                    init = torch.ones(1, config.features, res[1], res[0])
                else:
                    lo, hi = config.init_range
                    init = lo + (hi - lo) * torch.rand(1, config.features, res[1], res[0], generator=generator)
                planes.append(nn.Parameter(init))
        self.planes = nn.ParameterList(planes)
        in_dim = config.features * len(config.multires)
        trunk = []
        for _ in range(config.hidden_layers):
            trunk.append(_linear(in_dim, config.hidden, generator))
            in_dim = config.hidden
        self.trunk = nn.ModuleList(trunk)
        outputs = {"position": 3, "rotation": 4}
        if config.predict_scale:
            outputs["scale"] = 3
        self.heads = nn.ModuleDict({
            name: nn.ModuleList([_linear(config.hidden, config.hidden, generator), _zero_linear(config.hidden, dim)])
            for name, dim in outputs.items()
        })

    def grid_parameters(self) -> list[nn.Parameter]:
        """The feature planes (their own learning rate)."""
        return list(self.planes)

    def mlp_parameters(self) -> list[nn.Parameter]:
        """The MLP weights (their own learning rate)."""
        return [p for name, p in self.named_parameters() if not name.startswith("planes.")]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``field.safetensors`` + ``config.json`` into ``folder`` (created). Returns the folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": FIELD_FORMAT})
        (folder / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return folder

    @staticmethod
    def load(folder: str | os.PathLike, device: torch.device | str | None = None) -> ResidualField:
        """Read a field written by ``save`` (InputError when the folder is not one)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise InputError(f"field: {folder} has no {name}")
        try:
            config = FieldConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise InputError(f"field: {folder / CONFIG_NAME} is not a valid field config ({exc})") from exc
        field_ = ResidualField(config)
        state = load_file(str(folder / WEIGHTS_NAME))
        try:
            field_.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(f"field: {folder / WEIGHTS_NAME} does not match its config ({exc})") from exc
        return field_.to(device) if device is not None else field_


def _linear(n_in: int, n_out: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    bound = 1.0 / n_in ** 0.5
    with torch.no_grad():
        layer.weight.copy_((torch.rand(n_out, n_in, generator=generator) * 2 - 1) * bound)
        layer.bias.copy_((torch.rand(n_out, generator=generator) * 2 - 1) * bound)
    return layer


def _zero_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    return layer


@dataclass(frozen=True)
class Residual:
    """Field outputs for N Gaussians at one time.

    Attributes:
        d_means: Position offsets (canonical or posed space, see FieldConfig.space). [N, 3]
        d_quats: Unit rotation deltas (w, x, y, z); identity is (1, 0, 0, 0). [N, 4]
        d_log_scales: Log-scale offsets, or None when the field does not predict scale. [N, 3]
        raw_rotation: The rotation head's raw output (0 = identity; used by regularisers). [N, 4]
    """

    d_means: Tensor
    d_quats: Tensor
    d_log_scales: Tensor | None
    raw_rotation: Tensor = field(repr=False, default=None)  # type: ignore[assignment]


def normalize_points(points: Tensor, bounds: tuple[float, ...]) -> Tensor:
    """Map points into [−1, 1]³ by the box ``(min xyz, max xyz)``. [N, 3] -> [N, 3]"""
    b = torch.as_tensor(bounds, dtype=points.dtype, device=points.device)
    return (points - b[:3]) / (b[3:] - b[:3]) * 2.0 - 1.0


def sample_plane(plane: Tensor, coords: Tensor) -> Tensor:
    """Bilinear sample of ``plane [1, C, H, W]`` at ``coords [N, 2]`` ((u, v) ∈ [−1, 1], u along W). -> [N, C]

    Points outside the plane take the border value (so Gaussians that leave the box stay defined).
    """
    grid = coords.reshape(1, 1, -1, 2).to(plane.dtype)
    out = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, :, 0].transpose(0, 1)


def hexplane_features(field_: ResidualField, points: Tensor, time: Tensor | float) -> Tensor:
    """Multi-resolution HexPlane features at normalised points and time.

    Args:
        field_: The field (its planes are read).
        points: Normalised positions in [−1, 1]³. [N, 3]
        time: Normalised time in [−1, 1]: a scalar or one per point. [] or [N]

    Returns:
        Features. [N, features × len(multires)]
    """
    n = points.shape[0]
    t = torch.as_tensor(time, dtype=points.dtype, device=points.device).expand(n)
    coords4 = torch.cat([points, t[:, None]], dim=-1)
    out = []
    planes = list(field_.planes)
    for level in range(len(field_.config.multires)):
        prod = None
        for k, (a, b) in enumerate(PLANE_PAIRS):
            f = sample_plane(planes[level * 6 + k], coords4[:, [a, b]])
            prod = f if prod is None else prod * f
        out.append(prod)
    return torch.cat(out, dim=-1)


def query_field(field_: ResidualField, canonical_means: Tensor, time: Tensor | float) -> Residual:
    """Evaluate the residual at canonical positions and one normalised time.

    Args:
        field_: The field.
        canonical_means: Canonical Gaussian centres (unnormalised, body rest frame). [N, 3]
        time: Normalised animation time in [−1, 1]. scalar or [N]

    Returns:
        Residual with [N, ·] tensors.
    """
    if canonical_means.ndim != 2 or canonical_means.shape[1] != 3:
        raise ValueError(f"query_field: canonical_means: expected [N, 3], got {list(canonical_means.shape)}")
    x = hexplane_features(field_, normalize_points(canonical_means, field_.config.bounds), time)
    for layer in field_.trunk:
        x = F.relu(F.linear(x, layer.weight, layer.bias))
    outs = {}
    for name, (l1, l2) in field_.heads.items():
        h = F.relu(F.linear(x, l1.weight, l1.bias))
        outs[name] = F.linear(h, l2.weight, l2.bias)
    raw_rot = outs["rotation"]
    identity = torch.zeros_like(raw_rot)
    identity[:, 0] = 1.0
    d_quats = F.normalize(identity + raw_rot, dim=-1)
    return Residual(d_means=outs["position"], d_quats=d_quats, d_log_scales=outs.get("scale"), raw_rotation=raw_rot)


def apply_residual(
    means: Tensor, quats: Tensor, log_scales: Tensor, residual: Residual
) -> tuple[Tensor, Tensor, Tensor]:
    """Add a residual to Gaussians (canonical space before skinning, or posed space after).

    ``means + Δp``, ``Δq ⊗ quats``, ``log_scales + Δs``. [N, 3], [N, 4], [N, 3] (or with a leading frame axis).
    With a zero residual the outputs equal the inputs exactly.
    """
    out_means = means + residual.d_means
    out_quats = quaternion_multiply(residual.d_quats.expand_as(quats), quats)
    out_scales = log_scales if residual.d_log_scales is None else log_scales + residual.d_log_scales
    return out_means, out_quats, out_scales


def normalized_time(frame: Tensor | int, num_frames: int) -> Tensor:
    """Motion frame index -> field time in [−1, 1] (frame 0 -> −1, last -> +1; a 1-frame motion -> 0)."""
    frame = torch.as_tensor(frame, dtype=torch.float32)
    if num_frames <= 1:
        return torch.zeros_like(frame)
    return -1.0 + 2.0 * frame / (num_frames - 1)


def total_variation(field_: ResidualField) -> Tensor:
    """Mean squared first differences of every plane along both axes (K-Planes' plane TV)."""
    total = torch.zeros((), dtype=field_.planes[0].dtype, device=field_.planes[0].device)
    for plane in field_.planes:
        total = total + (plane[..., 1:, :] - plane[..., :-1, :]).square().mean()
        total = total + (plane[..., :, 1:] - plane[..., :, :-1]).square().mean()
    return total / len(field_.planes)


def time_smoothness(field_: ResidualField) -> Tensor:
    """Mean squared second differences along the time axis of the space-time planes (K-Planes)."""
    total = torch.zeros((), dtype=field_.planes[0].dtype, device=field_.planes[0].device)
    count = 0
    for k, plane in enumerate(field_.planes):
        if PLANE_PAIRS[k % 6][1] != 3:
            continue
        # time is the plane's second coordinate -> its H axis
        d2 = plane[..., 2:, :] - 2 * plane[..., 1:-1, :] + plane[..., :-2, :]
        total = total + d2.square().mean()
        count += 1
    return total / max(count, 1)
