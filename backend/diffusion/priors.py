"""Exact flow-matching velocity fields for Gaussian and Gaussian-mixture data: models whose answer we know.

Convention (the samplers' own): ``x_σ = (1−σ)·x0 + σ·ε``, ``v = ε − x0``. Since ``ε = (x − (1−σ)·x0)/σ``,
``v = (x − x0)/σ``, and the ideal network predicts ``E[v | x_σ] = (x − E[x0 | x_σ])/σ``.

For one Gaussian component ``x0 ~ N(μ, Σ)`` with ``Σ = U·diag(λ)·Uᵀ`` and ``a = 1−σ``, the marginal is
``x_σ ~ N(a·μ, a²·Σ + σ²·I)`` and the posterior mean is ``μ + a·Σ·(a²Σ + σ²I)⁻¹·(x − a·μ)``. Substituting gives
a form with no division by σ, exact at both ends (σ = 0: ``v = −x``; σ = 1: ``v = x − μ``):

    v = U · diag((σ − a·λ) / (a²·λ + σ²)) · Uᵀ · (x − a·μ) − μ

A mixture's velocity is the responsibility-weighted sum of its components' velocities, with responsibilities
``p(k | x_σ) ∝ π_k · N(x_σ; a·μ_k, a²·Σ_k + σ²·I)``.

Data of any shape: a prior has an ``event_shape`` (e.g. ``(64,)`` or ``(16, 21, 60, 104)``); inputs are
``[*batch, *event_shape]`` and are flattened to ``D = prod(event_shape)`` inside. Full covariances are meant
for small D (they are eigen-decomposed once); diagonal ones work at any size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["GaussianMixturePrior", "IdentityToy", "gaussian_prior", "gaussian_mixture_prior", "identity_toy"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True, eq=False)
class GaussianMixturePrior:
    """A Gaussian mixture over tensors of shape ``event_shape``, with its exact flow-matching velocity.

    Build it with ``gaussian_prior`` or ``gaussian_mixture_prior``; calling it is the model contract
    ``velocity(x, sigma) -> v`` of ``backend.diffusion.sampling``.

    Attributes:
        event_shape: Shape of one data point.
        log_weights: Log mixture weights, normalised. [K]
        means: Component means, flattened. [K, D]
        eigvals: Covariance eigenvalues (the variances when diagonal), all > 0. [K, D]
        eigvecs: Covariance eigenvectors as columns, or None for diagonal covariances. [K, D, D] | None
    """

    event_shape: tuple[int, ...]
    log_weights: Tensor
    means: Tensor
    eigvals: Tensor
    eigvecs: Tensor | None

    @property
    def num_components(self) -> int:
        """Number of mixture components K."""
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        """Flattened data dimension D."""
        return int(self.means.shape[1])

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Exact velocity ``E[ε − x0 | x_σ = x]``.

        Args:
            x: Noisy data. [*batch, *event_shape]
            sigma: Noise level in [0, 1] (0-dim tensor or float).

        Returns:
            The velocity, same shape and dtype as x.
        """
        flat, batch = self._flatten(x, "x")
        return self._velocity_flat(flat, self._sigma(sigma)).reshape(*batch, *self.event_shape).to(x.dtype)

    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Posterior mean ``E[x0 | x_σ = x] = x − σ·v``.

        Args:
            x: Noisy data. [*batch, *event_shape]
            sigma: Noise level in [0, 1].

        Returns:
            The posterior mean, same shape as x.
        """
        return x - self._sigma(sigma) * self(x, sigma)

    def responsibilities(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """Component posteriors ``p(k | x_σ = x)``.

        Args:
            x: Data (σ = 0) or noisy data. [*batch, *event_shape]
            sigma: Noise level in [0, 1].

        Returns:
            Responsibilities summing to 1 over the last axis. [*batch, K]
        """
        flat, batch = self._flatten(x, "x")
        return self._responsibilities_flat(flat, self._sigma(sigma)).reshape(*batch, self.num_components)

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """Log density of the marginal at noise level σ (σ = 0: the data density itself).

        Args:
            x: Data or noisy data. [*batch, *event_shape]
            sigma: Noise level in [0, 1].

        Returns:
            Log density in nats. [*batch]
        """
        flat, batch = self._flatten(x, "x")
        log_joint = self._component_log_probs(flat, self._sigma(sigma)) + self.log_weights
        return torch.logsumexp(log_joint, dim=-1).reshape(batch)

    def sample(self, n: int, *, generator: torch.Generator, component: int | None = None) -> Tensor:
        """Draws clean samples x0.

        Args:
            n: Number of samples.
            generator: Source of every random draw (on the prior's device).
            component: Draw from this component only; None draws the component from the weights.

        Returns:
            Samples. [n, *event_shape]
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        device, dtype = self.means.device, self.means.dtype
        if component is None:
            ks = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        else:
            if not 0 <= component < self.num_components:
                raise ValueError(f"component must be in [0, {self.num_components}), got {component}")
            ks = torch.full((n,), component, dtype=torch.long, device=device)
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)
        z = z * self.eigvals[ks].sqrt()
        if self.eigvecs is not None:
            z = torch.einsum("nde,ne->nd", self.eigvecs[ks], z)
        return (self.means[ks] + z).reshape(n, *self.event_shape)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GaussianMixturePrior:
        """A copy on another device or dtype."""
        return GaussianMixturePrior(
            self.event_shape,
            self.log_weights.to(device=device, dtype=dtype),
            self.means.to(device=device, dtype=dtype),
            self.eigvals.to(device=device, dtype=dtype),
            None if self.eigvecs is None else self.eigvecs.to(device=device, dtype=dtype),
        )

    # -- internals -------------------------------------------------------------------------------------------

    def _flatten(self, x: Tensor, name: str) -> tuple[Tensor, tuple[int, ...]]:
        n = len(self.event_shape)
        if x.dim() < n or tuple(x.shape[x.dim() - n :]) != self.event_shape:
            raise ValueError(f"{name} must have shape [*batch, {', '.join(map(str, self.event_shape))}], "
                             f"got {list(x.shape)}")
        batch = tuple(x.shape[: x.dim() - n])
        return x.reshape(-1, self.dim).to(self.means.dtype), batch

    @staticmethod
    def _sigma(sigma: Tensor | float) -> float:
        s = float(sigma)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"sigma must be in [0, 1], got {s}")
        return s

    def _to_eig(self, d: Tensor) -> Tensor:
        """Coordinates of [B, K, D] offsets in each component's eigenbasis (Uᵀ·d)."""
        if self.eigvecs is None:
            return d
        return torch.einsum("bkd,kde->bke", d, self.eigvecs)

    def _velocity_flat(self, flat: Tensor, s: float) -> Tensor:
        a = 1.0 - s
        lam = self.eigvals
        coef = (s - a * lam) / (a * a * lam + s * s)  # [K, D]; denominator > 0 since λ > 0
        if self.num_components == 1:
            # The common cases without [B, K, D] intermediates: a diagonal Gaussian of any size, or a full
            # covariance folded into one D×D matrix.
            d = flat - a * self.means[0]
            if self.eigvecs is None:
                return coef[0] * d - self.means[0]
            u = self.eigvecs[0]
            return d @ (u * coef[0]) @ u.T - self.means[0]
        z = self._to_eig(flat.unsqueeze(1) - a * self.means)  # [B, K, D], computed once for both uses
        resp = torch.softmax(self._log_probs_from_eig(z, s) + self.log_weights, dim=-1)  # [B, K]
        w = resp.unsqueeze(-1) * coef * z
        back = w.sum(1) if self.eigvecs is None else torch.einsum("kde,bke->bd", self.eigvecs, w)
        return back - resp @ self.means

    def _log_probs_from_eig(self, z: Tensor, s: float) -> Tensor:
        a = 1.0 - s
        var = a * a * self.eigvals + s * s  # [K, D]
        return -0.5 * ((z * z / var).sum(-1) + var.log().sum(-1) + self.dim * _LOG_2PI)

    def _component_log_probs(self, flat: Tensor, s: float) -> Tensor:
        return self._log_probs_from_eig(self._to_eig(flat.unsqueeze(1) - (1.0 - s) * self.means), s)

    def _responsibilities_flat(self, flat: Tensor, s: float) -> Tensor:
        if self.num_components == 1:
            return torch.ones(flat.shape[0], 1, dtype=flat.dtype, device=flat.device)
        return torch.softmax(self._component_log_probs(flat, s) + self.log_weights, dim=-1)


def gaussian_prior(mean: Tensor, *, variance: Tensor | float | None = None,
                   covariance: Tensor | None = None) -> GaussianMixturePrior:
    """A single Gaussian ``N(mean, Σ)`` over tensors shaped like ``mean``.

    Args:
        mean: The mean; its shape is the event shape. [*event_shape]
        variance: Diagonal covariance, a scalar or broadcastable to mean (any size).
        covariance: Full covariance over the flattened mean (small D only). [D, D]

    Returns:
        The prior (K = 1). Exactly one of variance / covariance must be given.
    """
    return gaussian_mixture_prior(
        mean.unsqueeze(0),
        variances=None if variance is None else torch.as_tensor(variance, dtype=mean.dtype,
                                                                 device=mean.device).expand_as(mean).unsqueeze(0),
        covariances=None if covariance is None else covariance.unsqueeze(0),
    )


def gaussian_mixture_prior(means: Tensor, *, variances: Tensor | None = None, covariances: Tensor | None = None,
                           weights: Tensor | None = None) -> GaussianMixturePrior:
    """A mixture of K Gaussians over tensors of shape ``means.shape[1:]``.

    Args:
        means: Component means. [K, *event_shape]
        variances: Diagonal covariances. [K, *event_shape]
        covariances: Full covariances over the flattened event (small D only). [K, D, D]
        weights: Mixture weights (normalised here), uniform when None. [K]

    Returns:
        The prior. Exactly one of variances / covariances must be given; covariances must be positive definite.
    """
    if not torch.is_floating_point(means) or means.dim() < 2:
        raise ValueError(f"means must be a floating tensor [K, *event_shape], got {means.dtype} {list(means.shape)}")
    if (variances is None) == (covariances is None):
        raise ValueError("give exactly one of variances (diagonal) or covariances (full)")
    k = means.shape[0]
    event_shape = tuple(means.shape[1:])
    flat_means = means.reshape(k, -1)
    d = flat_means.shape[1]
    if variances is not None:
        if tuple(variances.shape) != tuple(means.shape):
            raise ValueError(f"variances must have the means' shape {list(means.shape)}, got {list(variances.shape)}")
        eigvals = variances.reshape(k, d).to(means.dtype)
        eigvecs = None
    else:
        if tuple(covariances.shape) != (k, d, d):
            raise ValueError(f"covariances must have shape [{k}, {d}, {d}], got {list(covariances.shape)}")
        cov = covariances.to(means.dtype)
        if not torch.allclose(cov, cov.transpose(1, 2), rtol=1e-5, atol=1e-6 * float(cov.abs().max())):
            raise ValueError("covariances must be symmetric")
        eigvals, eigvecs = torch.linalg.eigh(0.5 * (cov + cov.transpose(1, 2)))
    if not bool(torch.isfinite(eigvals).all()) or float(eigvals.min()) <= 0.0:
        raise ValueError(f"{'variances' if covariances is None else 'covariances'} must be positive "
                         f"(definite), smallest eigenvalue is {float(eigvals.min()):.3g}")
    if weights is None:
        log_weights = torch.full((k,), -math.log(k), dtype=means.dtype, device=means.device)
    else:
        if tuple(weights.shape) != (k,) or float(weights.min()) < 0 or float(weights.sum()) <= 0:
            raise ValueError(f"weights must be [{k}] non-negative with a positive sum, got {list(weights.shape)}")
        w = weights.to(means.dtype)
        log_weights = (w / w.sum()).log()
    return GaussianMixturePrior(event_shape, log_weights, flat_means, eigvals, eigvecs)


@dataclass(frozen=True, eq=False)
class IdentityToy:
    """A toy restoration problem with known answers: a mixture whose components are "identities".

    Data x0 ∈ R^D is one "image": the first ``identity_dims`` entries (the "face") carry the identity — a
    smooth component-specific mean plus isotropic variation (std ``rho``) — and the rest (the "garment")
    is shared by every identity: a few sharp, high-amplitude patterns (rank ``garment_rank``) over a thin
    noise floor (std ``tau``), the data manifold. The coarse input y is a clean sample made out of
    distribution: blurred (each region on its own; blurring the sharp garment patterns pushes y off the
    manifold), biased and noised. The preserve mask covers the identity dims.

    Attributes:
        prior: The exact prior (K components, full covariances). event_shape (D,)
        mask: Preserve mask, 1 on identity dims. [D]
        thin_basis: Orthonormal basis of the off-manifold (noise-floor) directions. [D, T]
        tau: Std of the noise floor.
        blur: Std (in entries) of the Gaussian blur of the corruption.
        bias: Constant added by the corruption.
        noise: Std of the noise added by the corruption.
    """

    prior: GaussianMixturePrior
    mask: Tensor
    thin_basis: Tensor
    tau: float
    blur: float
    bias: float
    noise: float

    def corrupt(self, x0: Tensor, *, generator: torch.Generator) -> Tensor:
        """Makes clean data out of distribution: blur, then bias, then noise.

        Args:
            x0: Clean data. [B, D]
            generator: Source of the noise.

        Returns:
            The corrupted input y. [B, D]
        """
        radius = max(1, int(math.ceil(3.0 * self.blur)))
        t = torch.arange(-radius, radius + 1, dtype=x0.dtype, device=x0.device)
        kernel = torch.exp(-0.5 * (t / self.blur) ** 2)
        kernel = (kernel / kernel.sum()).view(1, 1, -1)
        n_id = int(self.mask.sum())
        # Each region is blurred on its own: the identity entries must not pick up the garment's amplitude.
        blurred = torch.cat([
            torch.nn.functional.conv1d(
                torch.nn.functional.pad(part.unsqueeze(1), (radius, radius), mode="replicate"), kernel).squeeze(1)
            for part in (x0[:, :n_id], x0[:, n_id:])
        ], dim=1)
        return blurred + self.bias + self.noise * torch.randn(x0.shape, generator=generator, dtype=x0.dtype,
                                                              device=x0.device)

    def identity(self, x: Tensor) -> Tensor:
        """The most likely component of each point (σ = 0). [B] int64"""
        return self.prior.responsibilities(x).argmax(-1)

    def manifold_distance(self, x: Tensor) -> Tensor:
        """RMS off-manifold residual in units of the floor std (≈ 1 for data; > 1 out of distribution,
        < 1 over-smoothed), measured from the most likely component's mean. [B]"""
        means = self.prior.means[self.identity(x)]
        z = (x.to(means.dtype) - means) @ self.thin_basis / self.tau
        return z.square().mean(-1).sqrt()


def identity_toy(*, seed: int = 0, identities: int = 8, identity_dims: int = 16, garment_dims: int = 48,
                 separation: float = 10.0, rho: float = 1.0, garment_rank: int = 8, garment_amplitude: float = 10.0,
                 tau: float = 0.3, blur: float = 1.5, bias: float = 0.5, noise: float = 0.2) -> IdentityToy:
    """Builds the identities toy (see ``IdentityToy``); the defaults are the ones the tests and the
    benchmark use.

    Args:
        seed: Seed of the identity means and garment patterns.
        identities: Number of components K.
        identity_dims: Identity ("face") entries, covered by the mask.
        garment_dims: Garment entries, shared by all identities.
        separation: Mean distance between two identity means.
        rho: Within-identity std of the identity entries.
        garment_rank: Number of sharp garment patterns (the manifold's dimension in the garment).
        garment_amplitude: Per-entry std of the garment patterns.
        tau: Std of the garment noise floor (the manifold's thickness).
        blur: Corruption blur std, in entries.
        bias: Corruption bias.
        noise: Corruption noise std.

    Returns:
        The toy problem.
    """
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    d = identity_dims + garment_dims
    # Identity means: smooth (low-frequency cosine) patterns, so blur changes them little.
    t = torch.arange(identity_dims, dtype=f64)
    freqs = min(3, identity_dims)
    basis = torch.stack([torch.cos(math.pi * f * (t + 0.5) / identity_dims) for f in range(1, freqs + 1)], 1)
    mu_id = torch.randn(identities, freqs, generator=g, dtype=f64) @ basis.T
    if identities > 1:
        mean_dist = torch.cdist(mu_id, mu_id).sum() / (identities * (identities - 1))
        mu_id = mu_id * (separation / mean_dist)
    means = torch.zeros(identities, d, dtype=f64)
    means[:, :identity_dims] = mu_id
    # Garment: sharp random ±1 patterns; blurring them leaves the span (the manifold).
    patterns = (torch.randint(0, 2, (garment_dims, garment_rank), generator=g).to(f64) * 2 - 1)
    patterns = patterns * (garment_amplitude / math.sqrt(garment_rank))
    cov = torch.zeros(d, d, dtype=f64)
    cov[:identity_dims, :identity_dims] = rho**2 * torch.eye(identity_dims, dtype=f64)
    cov[identity_dims:, identity_dims:] = patterns @ patterns.T + tau**2 * torch.eye(garment_dims, dtype=f64)
    # Off-manifold directions: the garment block's noise-floor eigenvectors (the identity entries are full rank).
    evals, evecs = torch.linalg.eigh(cov[identity_dims:, identity_dims:])
    thin = torch.zeros(d, int((evals < 1.5 * tau**2).sum()), dtype=f64)
    thin[identity_dims:] = evecs[:, evals < 1.5 * tau**2]
    prior = gaussian_mixture_prior(means.float(), covariances=cov.expand(identities, d, d).float())
    mask = torch.zeros(d)
    mask[:identity_dims] = 1.0
    return IdentityToy(prior, mask, thin.float(), float(tau), float(blur), float(bias), float(noise))
