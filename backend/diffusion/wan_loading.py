"""Loading a Wan model for ``WanPrior``: checks that run before any weight is read, the diffusers / transformers
component loads, device and offload defaults, group offload, and the prompt-embedding cache files.

Nothing here runs the network; ``backend.diffusion.wan.WanPrior`` holds the loaded modules and computes with them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from backend.core.errors import CapabilityError, InputError
from backend.diffusion import registry

logger = logging.getLogger("backend.diffusion.wan")

OFFLOAD_MODES = ("none", "model", "group")


def load_components(
    path_or_repo_id: str | os.PathLike,
    *,
    kind: str | None,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    vae_dtype: torch.dtype,
    allow_download: bool,
    offload: str | None,
    vae_tiling: bool | None,
    text_encoder: bool,
    cache_dir: str | os.PathLike | None,
) -> dict:
    """Check and load the components of a diffusers-layout Wan model (arguments of ``WanPrior.from_pretrained``).

    Returns:
        The keyword arguments of ``WanPrior(...)``: modules in eval mode without gradients, the resolved device,
        dtype and offload mode, the detected kind, the folder and the registry's name and default CFG.
    """
    registry.validate_kind(kind)
    device = torch.device(device) if device is not None else _default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CapabilityError("device cuda was asked for but this machine has no CUDA GPU")
    if offload is not None and offload not in OFFLOAD_MODES:
        raise InputError(f"offload: expected one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)

    folder = registry.resolve_model_path(path_or_repo_id, allow_download=allow_download, cache_dir=cache_dir)
    index = registry.read_model_index(folder)
    t_config = registry.read_component_config(folder, "transformer")
    detected = _detect_kind(t_config, folder)
    if kind is not None and kind != detected:
        raise InputError(f"prior kind: asked for {kind!r} but {folder} holds a {detected!r} model")
    vae_config = registry.read_component_config(folder, "vae")
    if int(vae_config.get("z_dim", 16)) != 16:
        raise InputError(
            f"model {folder}: unsupported variant (VAE with {vae_config.get('z_dim')} latent channels, "
            f"e.g. Wan2.2 TI2V-5B); supported: Wan2.1/2.2 models with the 16-channel Wan VAE"
        )
    params = registry.check_runnable(folder, str(device))
    if device.type != "cuda" and params > 1e9:
        logger.warning("model %s (%.1fB parameters) on %s: expect minutes per sampler step at 480x832",
                       folder.name, params / 1e9, device)
    if offload is None:
        offload = _default_offload(device, params * torch.finfo(dtype).bits / 8)
    two_expert = bool(index.get("transformer_2")) and index["transformer_2"][0] is not None
    boundary_ratio = index.get("boundary_ratio") if two_expert else None
    info = registry.find_model(os.fspath(path_or_repo_id))

    from diffusers import AutoencoderKLWan, WanTransformer3DModel, WanVACETransformer3DModel

    transformer_cls = WanVACETransformer3DModel if detected == "vace" else WanTransformer3DModel
    transformer = _load(transformer_cls, folder, "transformer", dtype)
    transformer_2 = _load(transformer_cls, folder, "transformer_2", dtype) if two_expert else None
    vae = _load(AutoencoderKLWan, folder, "vae", vae_dtype)
    if vae_tiling if vae_tiling is not None else device.type == "cuda":
        vae.enable_tiling()

    tokenizer = encoder = None
    if text_encoder and (folder / "text_encoder" / "config.json").is_file():
        tokenizer, encoder = _load_text_encoder(folder, dtype)
    elif text_encoder:
        logger.info("model %s has no text encoder; prompt embeddings must be given or cached", folder)

    for module in (transformer, transformer_2, vae, encoder):
        if module is not None:
            module.eval().requires_grad_(False)
    return dict(
        kind=detected, transformer=transformer, transformer_2=transformer_2, boundary_ratio=boundary_ratio,
        vae=vae, text_encoder=encoder, tokenizer=tokenizer, device=device, dtype=dtype, folder=folder,
        name=info.repo_id if info else folder.name, default_cfg=info.default_cfg if info else None,
        offload=offload,
    )


def enable_group_offload(transformer: torch.nn.Module, transformer_2: torch.nn.Module | None,
                         device: torch.device) -> None:
    """Stream the transformers' blocks from the CPU one group at a time (14B models on small cards)."""
    for module in (transformer, transformer_2):
        if module is not None:
            module.enable_group_offload(
                onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                num_blocks_per_group=1, use_stream=device.type == "cuda",
            )


def save_prompt_embeds(
    path: str | os.PathLike, prompt_embeds: Tensor, negative_prompt_embeds: Tensor | None, *,
    prompt: str, negative_prompt: str, model: str = "",
) -> None:
    """Cache text embeddings as safetensors so the (large) text encoder need not be loaded again."""
    from safetensors.torch import save_file

    tensors = {"prompt_embeds": prompt_embeds.detach().to("cpu", torch.float32).contiguous()}
    if negative_prompt_embeds is not None:
        tensors["negative_prompt_embeds"] = negative_prompt_embeds.detach().to("cpu", torch.float32).contiguous()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, os.fspath(path), metadata={"prompt": prompt, "negative_prompt": negative_prompt, "model": model})


def load_prompt_embeds(
    path: str | os.PathLike, *, prompt: str | None = None, negative_prompt: str | None = None
) -> tuple[Tensor, Tensor | None] | None:
    """Cached embeddings from ``save_prompt_embeds``; None when absent or made for other prompts."""
    from safetensors import safe_open

    if not Path(path).is_file():
        return None
    with safe_open(os.fspath(path), framework="pt") as f:
        meta = f.metadata() or {}
        if prompt is not None and meta.get("prompt") != prompt:
            return None
        if negative_prompt is not None and meta.get("negative_prompt") != negative_prompt:
            return None
        keys = set(f.keys())
        pos = f.get_tensor("prompt_embeds")
        neg = f.get_tensor("negative_prompt_embeds") if "negative_prompt_embeds" in keys else None
    return pos, neg


def _default_offload(device: torch.device, transformer_bytes: float) -> str:
    """``"none"`` on CPU; on CUDA ``"model"``, or ``"group"`` when the transformer alone would fill most of the
    card (a 14B model in bf16 is 28 GB)."""
    if device.type != "cuda":
        return "none"
    total = torch.cuda.get_device_properties(device).total_memory
    return "group" if transformer_bytes > 0.6 * total else "model"


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _detect_kind(t_config: dict, folder: Path) -> str:
    name = t_config.get("_class_name", "")
    if name == "WanVACETransformer3DModel":
        kind = "vace"
    elif name == "WanTransformer3DModel":
        kind = "t2v"
    else:
        raise InputError(
            f"model {folder}: unsupported variant (transformer class {name or 'unknown'}); "
            f"supported: WanTransformer3DModel (T2V), WanVACETransformer3DModel (VACE)"
        )
    if int(t_config.get("in_channels", 16)) != 16 or t_config.get("image_dim") is not None:
        raise InputError(
            f"model {folder}: unsupported variant (image-to-video transformer: in_channels="
            f"{t_config.get('in_channels')}, image_dim={t_config.get('image_dim')}); supported: T2V and VACE"
        )
    return kind


def _load(cls, folder: Path, subfolder: str, dtype: torch.dtype) -> torch.nn.Module:
    try:
        return cls.from_pretrained(os.fspath(folder), subfolder=subfolder, torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError, KeyError, EnvironmentError) as exc:
        raise CapabilityError(f"model folder {folder}: cannot load {subfolder}: {exc}") from exc


def _load_text_encoder(folder: Path, dtype: torch.dtype):
    from transformers import AutoTokenizer, UMT5EncoderModel

    import transformers
    from packaging.version import Version

    # transformers renamed ``torch_dtype`` to ``dtype`` in 4.56.
    dtype_kw = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    try:
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(folder / "tokenizer"))
        encoder = UMT5EncoderModel.from_pretrained(os.fspath(folder / "text_encoder"), **{dtype_kw: dtype})
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CapabilityError(f"model folder {folder}: cannot load text encoder/tokenizer: {exc}") from exc
    return tokenizer, encoder


def module_device(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
