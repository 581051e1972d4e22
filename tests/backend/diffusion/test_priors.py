"""The exact priors against brute-force posterior formulas."""

from __future__ import annotations

import math

import pytest
import torch

from backend.diffusion.priors import gaussian_mixture_prior, gaussian_prior, identity_toy

pytestmark = pytest.mark.unit


def _random_cov(d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.2 * torch.eye(d, dtype=torch.float64)


def _mvn_logpdf(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)


@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.5, 0.93, 1.0])
def test_gaussian_velocity_matches_posterior_mean(sigma: float) -> None:
    g = torch.Generator().manual_seed(0)
    d = 5
    cov = _random_cov(d, g)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    prior = gaussian_prior(mu, covariance=cov)
    x = torch.randn(7, d, generator=g, dtype=torch.float64)
    a = 1.0 - sigma
    marg = a * a * cov + sigma * sigma * torch.eye(d, dtype=torch.float64)
    x0_hat = mu + (a * cov @ torch.linalg.solve(marg, (x - a * mu).T)).T
    torch.testing.assert_close(prior.denoise(x, sigma), x0_hat, rtol=1e-7, atol=1e-7)
    if sigma > 0:
        torch.testing.assert_close(prior(x, torch.tensor(sigma)), (x - x0_hat) / sigma, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(prior.log_prob(x, sigma), _mvn_logpdf(x, a * mu, marg))


def test_velocity_ends_are_exact() -> None:
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(3, 4, generator=g)
    prior = gaussian_prior(mu, variance=torch.rand(3, 4, generator=g) + 0.1)
    x = torch.randn(2, 3, 4, generator=g)
    torch.testing.assert_close(prior(x, 1.0), x - mu)  # pure noise: E[x0] = mean
    torch.testing.assert_close(prior(x, 0.0), -x)  # clean data: E[ε] = 0


def test_diagonal_equals_full_and_any_shape() -> None:
    g = torch.Generator().manual_seed(2)
    var = torch.rand(2, 3, generator=g, dtype=torch.float64) + 0.1
    mu = torch.randn(2, 3, generator=g, dtype=torch.float64)
    diag = gaussian_prior(mu, variance=var)
    full = gaussian_prior(mu, covariance=torch.diag(var.flatten()))
    x = torch.randn(4, 5, 2, 3, generator=g, dtype=torch.float64)
    for s in (0.0, 0.3, 1.0):
        torch.testing.assert_close(diag(x, s), full(x, s))
    assert diag(x, 0.3).shape == x.shape


def test_mixture_velocity_is_responsibility_weighted() -> None:
    g = torch.Generator().manual_seed(3)
    k, d = 3, 4
    means = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    covs = torch.stack([_random_cov(d, g) for _ in range(k)])
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    mix = gaussian_mixture_prior(means, covariances=covs, weights=w)
    x = torch.randn(6, d, generator=g, dtype=torch.float64)
    s = 0.4
    a = 1 - s
    log_joint = torch.stack([
        math.log(w[j]) + _mvn_logpdf(x, a * means[j], a * a * covs[j] + s * s * torch.eye(d, dtype=torch.float64))
        for j in range(k)], -1)
    resp = torch.softmax(log_joint, -1)
    v_k = torch.stack([gaussian_prior(means[j], covariance=covs[j])(x, s) for j in range(k)], 1)
    torch.testing.assert_close(mix.responsibilities(x, s), resp)
    torch.testing.assert_close(mix(x, s), (resp.unsqueeze(-1) * v_k).sum(1))
    torch.testing.assert_close(mix.log_prob(x, s), torch.logsumexp(log_joint, -1))


def test_sample_matches_moments() -> None:
    g = torch.Generator().manual_seed(4)
    cov = _random_cov(3, g)
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = gaussian_prior(mu, covariance=cov).sample(40000, generator=g)
    assert torch.linalg.norm(x.mean(0) - mu) < 0.03
    assert torch.linalg.norm(torch.cov(x.T) - cov) / torch.linalg.norm(cov) < 0.03


def test_rejects_bad_arguments() -> None:
    mu = torch.zeros(3)
    with pytest.raises(ValueError, match="exactly one"):
        gaussian_prior(mu)
    with pytest.raises(ValueError, match="positive"):
        gaussian_prior(mu, covariance=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_prior(mu, variance=1.0)(torch.zeros(3), 1.5)
    with pytest.raises(ValueError, match=r"\[\*batch, 3\]"):
        gaussian_prior(mu, variance=1.0)(torch.zeros(4), 0.5)


def test_identity_toy_is_well_posed() -> None:
    toy = identity_toy()
    g = torch.Generator().manual_seed(5)
    x0 = toy.prior.sample(512, generator=g)
    # Clean data: identity is (nearly always) unambiguous and sits on the manifold (distance ≈ 1 floor std).
    src = toy.identity(x0)
    assert float(toy.prior.responsibilities(x0).max(-1).values.mean()) > 0.97
    assert abs(float(toy.manifold_distance(x0).mean()) - 1.0) < 0.05
    # The corrupted input keeps the identity but is far off the manifold.
    y = toy.corrupt(x0, generator=g)
    assert float((toy.identity(y) == src).float().mean()) > 0.9
    assert float(toy.manifold_distance(y).mean()) > 5.0
