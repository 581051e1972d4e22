"""Flow-matching samplers, among them the paper's self-guided stochastic sampler (Ani3DHuman Alg. 1).

Convention: ``x_σ = (1−σ)·x0 + σ·ε``, and a model predicts the velocity ``v = ε − x0``. Every sampler works
over one contract, ``velocity(x, sigma) -> v`` with ``sigma`` a 0-dim tensor; conditioning and classifier-free
guidance live inside that callable. All samplers start from the noised coarse input (SDEdit, Eq. 6),
``x = (1−σ_0)·y + σ_0·ε``, so ``sigmas[0]`` is the strength after the shift.

- ``sample_ode``: deterministic Euler steps (the SDEdit baseline).
- ``sample_sde``: Eq. 8 — at every step, split the state into the posterior mean ``x0 = x − σ·v`` and the noise
  estimate ``x1 = x + (1−σ)·v``, mix fresh noise into ``x1`` with weight ``γ``, and re-combine at the next σ.
- ``sample_self_guided``: the same with the closed-form masked guidance ``x0 ← x0 + λ_i·M⊙(y − x0)`` (Eq. 9),
  which is the gradient step on ``½‖M⊙(y − x0)‖²`` with ``∂x0/∂x`` taken as identity; optionally the true
  Jacobian through the network (DPS-style, for small models).

With ``gamma=0`` the stochastic step is exactly the Euler step (DDIM), so ``sample_sde(gamma=0)`` equals
``sample_ode``. Every random draw comes from the caller's ``torch.Generator`` and the three samplers draw in
the same order (``ε_0`` first, then one ``ε`` per step except the last), so the self-guided sampler with
``mask = 0`` or ``guidance = 0`` reproduces ``sample_sde`` bit for bit from the same generator state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Union

import torch
from torch import Tensor

__all__ = [
    "Velocity",
    "StepInfo",
    "StepCallback",
    "GuidanceSchedule",
    "flow_sigmas",
    "sample_ode",
    "sample_sde",
    "sample_self_guided",
    "guidance_weights",
]

log = logging.getLogger(__name__)

Velocity = Callable[[Tensor, Tensor], Tensor]
"""``velocity(x, sigma) -> v``: x [*shape], sigma a 0-dim tensor, v [*shape]."""


@dataclass(frozen=True)
class StepInfo:
    """What a sampler reports after each model evaluation.

    Attributes:
        index: Step index i in [0, total).
        total: Number of steps N.
        sigma: Noise level σ_i of this step.
        x0: The current clean estimate (after guidance, if any); the last step's is the result. [*shape]
    """

    index: int
    total: int
    sigma: float
    x0: Tensor


StepCallback = Callable[[StepInfo], None]
"""Called after every step; raising (e.g. ``backend.core.errors.Cancelled``) stops the sampler at once."""

GuidanceSchedule = Union[Literal["linear", "constant"], Callable[[int, float], float]]
"""``"linear"``: λ_i = λ·(1−σ_i) (released code); ``"constant"``: λ_i = λ; or ``f(i, σ_i) -> factor``,
λ_i = λ·factor."""

Gamma = Union[Literal["sigma", "full"], float]


def flow_sigmas(steps: int, strength: float, shift: float = 5.0, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Tensor:
    """Shifted linear noise levels (Wan's schedule), starting at the shifted strength and ending at exactly 0.

    ``σ_lin = linspace(strength, 0, steps+1)`` and ``σ = shift·σ_lin / (1 + (shift−1)·σ_lin)``.

    Args:
        steps: Number of sampler steps N (>= 1).
        strength: SDEdit strength s in [0, 1]: 0 keeps the input, 1 starts from pure noise.
        shift: Timestep shift (> 0); 1 is no shift, Wan uses 5.
        dtype: Output dtype.
        device: Output device.

    Returns:
        Non-increasing noise levels, last exactly 0. [steps + 1]
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not (isinstance(strength, (int, float)) and 0.0 <= float(strength) <= 1.0):
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0.0):
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")
    lin = torch.linspace(float(strength), 0.0, steps + 1, dtype=torch.float64)
    sig = shift * lin / (1.0 + (shift - 1.0) * lin)
    sig[-1] = 0.0
    return sig.to(dtype=dtype, device=device)


def guidance_weights(sigmas: Tensor, guidance: float, schedule: GuidanceSchedule = "linear") -> list[float]:
    """The per-step guidance weights λ_i for the N steps of ``sigmas``.

    Args:
        sigmas: Noise levels. [N + 1]
        guidance: Base weight λ in [0, 1].
        schedule: ``"linear"`` (λ·(1−σ_i)), ``"constant"`` (λ) or a callable ``f(i, σ_i) -> factor``.

    Returns:
        N weights, each in [0, 1].
    """
    if not (isinstance(guidance, (int, float)) and 0.0 <= float(guidance) <= 1.0):
        raise ValueError(f"guidance must be in [0, 1], got {guidance!r}")
    sig = [float(s) for s in sigmas[:-1]]
    if schedule == "linear":
        lams = [guidance * (1.0 - s) for s in sig]
    elif schedule == "constant":
        lams = [float(guidance)] * len(sig)
    elif callable(schedule):
        lams = [guidance * float(schedule(i, s)) for i, s in enumerate(sig)]
    else:
        raise ValueError(f"guidance_schedule must be 'linear', 'constant' or a callable, got {schedule!r}")
    for i, lam in enumerate(lams):
        if not (math.isfinite(lam) and 0.0 <= lam <= 1.0):
            raise ValueError(f"guidance weight at step {i} must be in [0, 1], got {lam}")
    return lams


def sample_ode(velocity: Velocity, y: Tensor, sigmas: Tensor, *, generator: torch.Generator,
               callback: StepCallback | None = None) -> Tensor:
    """SDEdit with the deterministic probability-flow ODE (Euler): ``x ← x + (σ_{i+1} − σ_i)·v``.

    Args:
        velocity: The model, ``velocity(x, sigma) -> v``.
        y: The (coarse) input the sampling starts from. [*shape]
        sigmas: Non-increasing noise levels in [0, 1], e.g. from ``flow_sigmas``. [N + 1]
        generator: Source of the start noise ε_0 (on y's device).
        callback: Called with a ``StepInfo`` after every model call; raising stops the sampler.

    Returns:
        The sample at σ_N (the clean result when σ_N = 0), y's shape and dtype. If σ_0 = 0, y itself (a copy),
        without calling the model.
    """
    sig = _check(y, sigmas, generator)
    if sig[0] == 0.0:
        return y.clone()
    total = len(sig) - 1
    with torch.no_grad():
        x = _start(y, sig[0], generator)
        for i in range(total):
            s, s_next = sig[i], sig[i + 1]
            v = velocity(x, _sigma_tensor(s, y))
            _check_v(v, y, i)
            if callback is not None:
                callback(StepInfo(i, total, s, x - s * v))
            x = x + (s_next - s) * v
    return x


def sample_sde(velocity: Velocity, y: Tensor, sigmas: Tensor, *, gamma: Gamma = "sigma",
               generator: torch.Generator, callback: StepCallback | None = None) -> Tensor:
    """Stochastic sampling (paper Eq. 8, Algorithm 1 without guidance).

    Args:
        velocity: The model, ``velocity(x, sigma) -> v``.
        y: The (coarse) input the sampling starts from. [*shape]
        sigmas: Non-increasing noise levels in [0, 1]. [N + 1]
        gamma: Fresh-noise fraction per step: ``"sigma"`` (γ_i = σ_i, the paper), ``"full"`` (γ_i = 1, the
            released code) or a number in [0, 1] (0 is the ODE).
        generator: Source of every noise draw (on y's device).
        callback: Called with a ``StepInfo`` after every model call; raising stops the sampler.

    Returns:
        The clean estimate x0 of the last step, y's shape and dtype (y itself, copied, if σ_0 = 0).
    """
    return _stochastic(velocity, y, sigmas, gamma=gamma, mask=None, lams=None, gradient=False,
                       generator=generator, callback=callback)


def sample_self_guided(velocity: Velocity, y: Tensor, sigmas: Tensor, *, mask: Tensor | float, guidance: float,
                       gamma: Gamma = "sigma", guidance_schedule: GuidanceSchedule = "linear",
                       gradient_guidance: bool = False, generator: torch.Generator,
                       callback: StepCallback | None = None) -> Tensor:
    """Self-guided stochastic sampling (paper Algorithm 1).

    Per step: ``v = velocity(x, σ_i)``, ``x0 = x − σ_i·v``, ``x1 = x + (1−σ_i)·v``,
    ``x0 ← x0 + λ_i·M⊙(y − x0)``; the last step returns x0; otherwise ``x1 ← √γ_i·ε + √(1−γ_i)·x1`` with fresh ε
    and ``x ← (1−σ_{i+1})·x0 + σ_{i+1}·x1``.

    Args:
        velocity: The model, ``velocity(x, sigma) -> v``.
        y: The coarse input: the start and the guidance target. [*shape]
        sigmas: Non-increasing noise levels in [0, 1]. [N + 1]
        mask: Preserve mask M in [0, 1] (1 = keep y, e.g. identity), broadcastable to y, or a scalar.
        guidance: Base guidance weight λ in [0, 1] (the code's ``sgs``: 0.05 default, 0.1–0.3 in experiments).
        gamma: ``"sigma"`` (γ_i = σ_i, paper), ``"full"`` (γ_i = 1, code) or a number in [0, 1].
        guidance_schedule: ``"linear"`` (λ_i = λ·(1−σ_i)), ``"constant"`` or ``f(i, σ_i) -> factor``.
        gradient_guidance: Replace the closed form by ``x0 ← x0 − λ_i·∇_x ½‖M⊙(y − x0(x))‖²``, differentiating
            through ``velocity`` with autograd (DPS-style; the true Jacobian instead of identity). Costs a
            backward pass per step: for small models. Equals the closed form when ∂x0/∂x = I and M is binary.
        generator: Source of every noise draw (on y's device).
        callback: Called with a ``StepInfo`` after every model call; raising stops the sampler.

    Returns:
        The guided clean estimate x0 of the last step, y's shape and dtype (y itself, copied, if σ_0 = 0).
    """
    m = torch.as_tensor(mask, dtype=y.dtype, device=y.device)
    try:
        shape = torch.broadcast_shapes(m.shape, y.shape)
    except RuntimeError:
        shape = None
    if shape != y.shape:
        raise ValueError(f"mask must broadcast to y's shape {list(y.shape)}, got {list(m.shape)}")
    if m.numel() and not (float(m.min()) >= 0.0 and float(m.max()) <= 1.0):
        raise ValueError(f"mask values must be in [0, 1], got [{float(m.min())}, {float(m.max())}]")
    lams = guidance_weights(sigmas, guidance, guidance_schedule)
    return _stochastic(velocity, y, sigmas, gamma=gamma, mask=m, lams=lams, gradient=bool(gradient_guidance),
                       generator=generator, callback=callback)


# -- internals -----------------------------------------------------------------------------------------------


def _check(y: Tensor, sigmas: Tensor, generator: torch.Generator) -> list[float]:
    if not isinstance(y, Tensor) or not torch.is_floating_point(y):
        raise ValueError(f"y must be a floating-point tensor, got {type(y).__name__} "
                         f"{getattr(y, 'dtype', '')}")
    if not isinstance(sigmas, Tensor) or sigmas.dim() != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of >= 2 noise levels, got "
                         f"{list(sigmas.shape) if isinstance(sigmas, Tensor) else type(sigmas).__name__}")
    sig = [float(s) for s in sigmas.detach().cpu().double()]
    if not all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in sig):
        raise ValueError(f"sigmas must lie in [0, 1], got {sig}")
    if any(b > a for a, b in zip(sig, sig[1:])):
        raise ValueError(f"sigmas must be non-increasing, got {sig}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != y.device.type:
        raise ValueError(f"generator must be on y's device {y.device}, got {generator.device}")
    return sig


def _check_v(v: Tensor, y: Tensor, i: int) -> None:
    if not isinstance(v, Tensor) or v.shape != y.shape:
        raise ValueError(f"velocity must return a tensor of y's shape {list(y.shape)} at step {i}, got "
                         f"{list(v.shape) if isinstance(v, Tensor) else type(v).__name__}")


def _sigma_tensor(s: float, y: Tensor) -> Tensor:
    # float32 even for half-precision latents: σ near 0 must not round away.
    return torch.tensor(s, dtype=torch.float32 if y.dtype in (torch.float16, torch.bfloat16) else y.dtype,
                        device=y.device)


def _randn(y: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)


def _start(y: Tensor, s0: float, generator: torch.Generator) -> Tensor:
    return (1.0 - s0) * y + s0 * _randn(y, generator)


def _gammas(gamma: Gamma, sig: list[float]) -> list[float]:
    if gamma == "sigma":
        return sig[:-1]
    if gamma == "full":
        return [1.0] * (len(sig) - 1)
    if isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and 0.0 <= float(gamma) <= 1.0:
        return [float(gamma)] * (len(sig) - 1)
    raise ValueError(f"gamma must be 'sigma', 'full' or a number in [0, 1], got {gamma!r}")


def _stochastic(velocity: Velocity, y: Tensor, sigmas: Tensor, *, gamma: Gamma, mask: Tensor | None,
                lams: list[float] | None, gradient: bool, generator: torch.Generator,
                callback: StepCallback | None) -> Tensor:
    sig = _check(y, sigmas, generator)
    gammas = _gammas(gamma, sig)
    if sig[0] == 0.0:
        return y.clone()
    total = len(sig) - 1
    with torch.no_grad():
        x = _start(y, sig[0], generator)
        for i in range(total):
            s = sig[i]
            lam = 0.0 if lams is None else lams[i]
            if gradient and lam > 0.0:
                x0, v = _gradient_guided_x0(velocity, x, y, s, mask, lam, i)
            else:
                v = velocity(x, _sigma_tensor(s, y))
                _check_v(v, y, i)
                x0 = x - s * v
                if lam > 0.0:
                    # x0 + w·(y − x0) with w = λ_i·M, in one pass; w = 0 gives x0 exactly.
                    x0 = x0.lerp_(y, mask * lam)
            if callback is not None:
                callback(StepInfo(i, total, s, x0))
            if i == total - 1:
                return x0
            x1 = x + (1.0 - s) * v
            g = gammas[i]
            x1 = math.sqrt(g) * _randn(y, generator) + math.sqrt(1.0 - g) * x1
            s_next = sig[i + 1]
            x = (1.0 - s_next) * x0 + s_next * x1
    raise AssertionError("unreachable")  # pragma: no cover


def _gradient_guided_x0(velocity: Velocity, x: Tensor, y: Tensor, s: float, mask: Tensor, lam: float,
                        i: int) -> tuple[Tensor, Tensor]:
    """x0 − λ·∇_x ½‖M⊙(y − x0(x))‖², with x0(x) = x − σ·velocity(x, σ) differentiated by autograd."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        v = velocity(xr, _sigma_tensor(s, y))
        _check_v(v, y, i)
        x0 = xr - s * v
        if not v.requires_grad and s > 0.0 and i == 0:
            log.warning("gradient_guidance: the velocity returned a tensor without grad (run under "
                        "torch.no_grad()?), so the guidance falls back to the identity Jacobian")
        loss = 0.5 * (mask * (y - x0)).square().sum()
        (grad,) = torch.autograd.grad(loss, xr)
    return (x0.detach() - lam * grad).to(y.dtype), v.detach()
