"""Video diffusion for restoration: the samplers (plain functions over ``velocity(x, sigma) -> v``), exact
analytic priors to prove them on, the Wan video prior (diffusers) and its registry, conditioning rendered from
our own 3D state, and ``restore()``. diffusers and transformers are imported only when a Wan model is loaded
or built (``wan_loading``, ``wan_random``), so this package itself stays light."""

from backend.diffusion.priors import gaussian_mixture_prior, gaussian_prior, identity_toy
from backend.diffusion.registry import SUPPORTED_MODELS, ModelInfo, model_status, resolve_model_path
from backend.diffusion.sampling import flow_sigmas, guidance_weights, sample_ode, sample_sde, sample_self_guided

__all__ = ["SUPPORTED_MODELS", "ModelInfo", "flow_sigmas", "gaussian_mixture_prior", "gaussian_prior",
           "guidance_weights", "identity_toy", "model_status", "resolve_model_path", "sample_ode", "sample_sde",
           "sample_self_guided"]
