"""Video diffusion for restoration: the samplers (plain functions over ``velocity(x, sigma) -> v``), exact
analytic priors to prove them on, the Wan video prior (diffusers) and its registry, conditioning rendered from
our own 3D state, and ``restore()``. The heavy Wan modules (diffusers, transformers) load only when imported:
``backend.diffusion.wan``, ``backend.diffusion.restore``."""

from backend.diffusion.priors import gaussian_mixture_prior, gaussian_prior, identity_toy
from backend.diffusion.registry import SUPPORTED_MODELS, ModelInfo, model_status, resolve_model_path
from backend.diffusion.sampling import flow_sigmas, guidance_weights, sample_ode, sample_sde, sample_self_guided

__all__ = ["SUPPORTED_MODELS", "ModelInfo", "flow_sigmas", "gaussian_mixture_prior", "gaussian_prior",
           "guidance_weights", "identity_toy", "model_status", "resolve_model_path", "sample_ode", "sample_sde",
           "sample_self_guided"]
