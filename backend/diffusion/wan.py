"""Wan video priors through diffusers model classes (not pipelines): VAE, text encoder, transformer(s).

``WanPrior`` holds a diffusers-layout Wan model (Wan2.1 T2V, Wan2.1 VACE, Wan2.2 two-expert T2V/VACE), loaded by
``WanPrior.from_pretrained`` through ``backend.diffusion.wan_loading``, and exposes
the three things a sampler needs: ``encode(video) -> latents``, ``decode(latents) -> video`` and a
``velocity(x, sigma) -> v`` callable with classifier-free guidance and the model's conditioning inside it.

Conventions:
  * Videos are float tensors ``[F, H, W, 3]`` in [0, 1]; F = 4k + 1, H and W multiples of 16.
  * Latents are ``[1, 16, F_lat, H/8, W/8]`` with F_lat = (F - 1) / 4 + 1, normalised with the VAE's
    ``latents_mean`` / ``latents_std`` as the diffusers Wan pipelines do.
  * Flow matching: ``x_sigma = (1 - sigma) x0 + sigma eps`` and the network predicts ``v = eps - x0``;
    the transformer's timestep is ``1000 * sigma`` (diffusers' FlowMatch schedulers use the same).

VACE conditioning reproduces ``WanVACEPipeline.prepare_video_latents`` / ``prepare_masks``: the control video
(our pose video) and its mask (all ones: every pixel is "generate") become 32 latent channels (VAE of the
masked-out video, VAE of the masked-in video) plus 64 channels of the pixel-unshuffled mask; a reference image is
encoded on its own and prepended as extra latent frames, both in the control latents (with zeros for the
second half and the mask) and in the latents being denoised.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.core.errors import CapabilityError, InputError
from backend.diffusion import registry
from backend.diffusion.wan_loading import (
    enable_group_offload,
    load_components,
    load_prompt_embeds,
    module_device,
    save_prompt_embeds,
)

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "a person moving, clean background, rotating camera, photorealistic, high quality"
DEFAULT_NEGATIVE_PROMPT = ""
MAX_SEQUENCE_LENGTH = 512
NUM_TRAIN_TIMESTEPS = 1000

Velocity = Callable[[Tensor, "float | Tensor"], Tensor]


@dataclass(frozen=True)
class WanConditions:
    """What the velocity needs besides ``x`` and ``sigma``; built once per video by ``prepare_conditions``.

    Attributes:
        prompt_embeds: Text embeddings of the prompt. [1, L, D]
        negative_prompt_embeds: Text embeddings of the negative prompt (CFG's unconditional branch). [1, L, D]
        control_latents: VACE control latents (video, mask, reference frames first). [1, 96, R + F_lat, h, w]
        reference_latents: Normalised VAE latents of the padded reference image(s). [1, 16, R, h, w]
        conditioning_scale: VACE control strength (1 = as trained).
    """

    prompt_embeds: Tensor
    negative_prompt_embeds: Tensor | None = None
    control_latents: Tensor | None = None
    reference_latents: Tensor | None = None
    conditioning_scale: float = 1.0

    @property
    def num_reference_frames(self) -> int:
        return 0 if self.reference_latents is None else int(self.reference_latents.shape[2])


def check_video_size(num_frames: int, height: int, width: int, what: str = "video") -> None:
    """Raise ``InputError`` unless F = 4k + 1 and H, W are positive multiples of 16 (the Wan VAE + patching)."""
    if num_frames < 1 or (num_frames - 1) % 4 != 0:
        raise InputError(f"{what}: frame count must be 4k+1 (1, 5, 9, ..., 81), got {num_frames}")
    if height < 16 or width < 16 or height % 16 or width % 16:
        raise InputError(f"{what}: height and width must be multiples of 16, got {height}x{width}")


def _check_video(video: Tensor, what: str = "video") -> None:
    if not isinstance(video, Tensor) or video.ndim != 4 or video.shape[-1] != 3:
        shape = list(video.shape) if isinstance(video, Tensor) else type(video).__name__
        raise InputError(f"{what}: expected a tensor [F, H, W, 3] in [0, 1], got {shape}")
    check_video_size(video.shape[0], video.shape[1], video.shape[2], what)


def _prompt_clean(text: str) -> str:
    """The diffusers Wan pipelines' prompt cleaning (ftfy + HTML unescape + whitespace)."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # ftfy only fixes mojibake; plain prompts are unaffected
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def pad_reference_image(image: Tensor, height: int, width: int, fill: float = 1.0) -> Tensor:
    """Scale an image to fit inside ``height x width`` keeping its aspect ratio, centred on a plain canvas.

    Never stretches: the scale is ``min(height / h, width / w)`` (as ``WanVACEPipeline.preprocess_conditions``),
    the rest of the canvas is ``fill`` (1 = white, the pipeline's choice).

    Args:
        image: Reference image in [0, 1]. [h, w, 3]
        height: Canvas height.
        width: Canvas width.
        fill: Canvas value in [0, 1].

    Returns:
        The padded image in [0, 1]. [height, width, 3]
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise InputError(f"reference_image: expected a tensor [h, w, 3] in [0, 1], got {list(image.shape)}")
    img_h, img_w = image.shape[:2]
    scale = min(height / img_h, width / img_w)
    new_h, new_w = max(1, int(img_h * scale)), max(1, int(img_w * scale))
    resized = F.interpolate(
        image.permute(2, 0, 1)[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False
    )[0].permute(1, 2, 0)
    canvas = torch.full((height, width, 3), float(fill), dtype=torch.float32, device=image.device)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized.clamp(0, 1)
    return canvas


def vace_mask_latents(mask: Tensor, num_latent_frames: int, spatial: int = 8, patch: int = 2) -> Tensor:
    """VACE's mask channels: pixel-unshuffle ×``spatial`` then nearest-exact in time (``prepare_masks``).

    Args:
        mask: Pixel mask, 1 = generate. [F, H, W]
        num_latent_frames: F_lat.

    Returns:
        [spatial², F_lat, H / spatial, W / spatial]
    """
    num_frames, height, width = mask.shape
    new_h = height // (spatial * patch) * patch
    new_w = width // (spatial * patch) * patch
    m = mask.reshape(num_frames, new_h, spatial, new_w, spatial)
    m = m.permute(2, 4, 0, 1, 3).flatten(0, 1)
    return F.interpolate(m[None], size=(num_latent_frames, new_h, new_w), mode="nearest-exact")[0]


class WanPrior:
    """A loaded Wan model: VAE, transformer(s), optional text encoder, with placement and offload.

    Build it with ``WanPrior.from_pretrained``. Holds modules only; the sampling loop lives in
    ``backend.diffusion.sampling`` and calls ``velocity``.
    """

    def __init__(
        self,
        *,
        kind: str,
        transformer: torch.nn.Module,
        vae: torch.nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        transformer_2: torch.nn.Module | None = None,
        boundary_ratio: float | None = None,
        text_encoder: torch.nn.Module | None = None,
        tokenizer=None,
        folder: Path | None = None,
        name: str = "",
        default_cfg: float | None = None,
        offload: str = "none",
    ) -> None:
        self.kind = kind
        self.transformer = transformer
        self.transformer_2 = transformer_2
        self.boundary_ratio = boundary_ratio
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.folder = folder
        self.name = name or (folder.name if folder is not None else "wan")
        self.default_cfg = float(default_cfg if default_cfg is not None else (5.0 if kind == "vace" else 2.0))
        self.offload = offload
        cfg = vae.config
        self.latent_channels = int(cfg.z_dim)
        self.temporal_factor = 2 ** sum(cfg.temperal_downsample)
        self.spatial_factor = 2 ** len(cfg.temperal_downsample)
        self._latents_mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self._latents_std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self._inactive_cache: dict[tuple[int, int, int], Tensor] = {}
        if offload == "none":
            for module in self._modules():
                module.to(self.device)

    # ---- loading -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike = registry.DEFAULT_MODEL,
        *,
        kind: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        vae_dtype: torch.dtype = torch.float32,
        allow_download: bool = False,
        offload: str | None = None,
        vae_tiling: bool | None = None,
        text_encoder: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ) -> WanPrior:
        """Load a diffusers-layout Wan model from a folder or the local Hugging Face cache.

        Every check that can fail (variant, folder contents, CUDA for a large model) runs before any weight is
        read.

        Args:
            path_or_repo_id: Folder or repository id (see ``backend.diffusion.registry``).
            kind: ``"t2v"`` or ``"vace"``; None = detected from the transformer class. A mismatch is an error.
            device: Execution device; default CUDA when available, else CPU.
            dtype: Transformer / text-encoder dtype; default bf16 on CUDA, float32 on CPU.
            vae_dtype: VAE dtype (float32 as in the diffusers Wan examples).
            allow_download: Download a missing repository (otherwise never).
            offload: ``"none"`` (everything on ``device``), ``"model"`` (each module on the GPU only while it
                runs, like ``enable_model_cpu_offload``), ``"group"`` (transformer blocks streamed from CPU, for
                14B models on small cards). Default: ``"none"`` on CPU; on CUDA ``"model"``, or ``"group"``
                when the transformer alone would take more than 60 % of the card.
            vae_tiling: Tiled VAE encode/decode (``AutoencoderKLWan.enable_tiling``); default on for CUDA.
            text_encoder: Load the tokenizer and text encoder if the folder has them. False = rely on cached or
                given prompt embeddings.
            cache_dir: Hugging Face cache folder.

        Raises:
            InputError: Unsupported variant or kind.
            CapabilityError: Missing/incomplete folder, weights not cached, large model without CUDA.
        """
        components = load_components(
            path_or_repo_id, kind=kind, device=device, dtype=dtype, vae_dtype=vae_dtype,
            allow_download=allow_download, offload=offload, vae_tiling=vae_tiling, text_encoder=text_encoder,
            cache_dir=cache_dir)
        prior = cls(**components)
        if prior.offload == "group":
            enable_group_offload(prior.transformer, prior.transformer_2, prior.device)
        logger.info("loaded %s (%s) on %s, %s, offload=%s", prior.name, prior.kind, prior.device, prior.dtype,
                    prior.offload)
        return prior

    # ---- placement -----------------------------------------------------------------------------------------
    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.transformer, self.transformer_2, self.vae, self.text_encoder) if m is not None]

    @contextlib.contextmanager
    def _active(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Make ``module`` resident on the execution device; with model offload, move the others out first."""
        if self.offload == "none":
            yield module
            return
        group_offloaded = self.offload == "group" and module in (self.transformer, self.transformer_2)
        for other in self._modules():
            if other is module or (self.offload == "group" and other in (self.transformer, self.transformer_2)):
                continue
            if module_device(other) != torch.device("cpu"):
                other.to("cpu")
        if not group_offloaded:
            module.to(self.device)
        yield module

    def offload_all(self) -> None:
        """Move every module to the CPU (with offload) and free cached GPU memory."""
        if self.offload == "none":
            return
        for module in self._modules():
            if not (self.offload == "group" and module in (self.transformer, self.transformer_2)):
                module.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---- VAE -------------------------------------------------------------------------------------------------
    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """Latent shape of a video of this size. ``(1, C, F_lat, H/8, W/8)``"""
        return (1, self.latent_channels, (num_frames - 1) // self.temporal_factor + 1,
                height // self.spatial_factor, width // self.spatial_factor)

    @torch.no_grad()
    def _encode_raw(self, video: Tensor) -> Tensor:
        """[1, 3, F, H, W] in [-1, 1] -> normalised latents (distribution mode, as the pipelines' "argmax")."""
        with self._active(self.vae) as vae:
            dist = vae.encode(video.to(self.device, vae.dtype)).latent_dist
            latents = dist.mode().float()
        mean, std = self._latents_mean.to(latents.device), self._latents_std.to(latents.device)
        return (latents - mean) / std

    def encode(self, video: Tensor) -> Tensor:
        """Encode a video into normalised latents.

        Args:
            video: RGB in [0, 1]. [F, H, W, 3], F = 4k + 1, H and W multiples of 16.

        Returns:
            Normalised latents, float32 on the execution device. [1, 16, F_lat, H/8, W/8]
        """
        _check_video(video)
        pixels = video.float().permute(3, 0, 1, 2)[None] * 2.0 - 1.0
        return self._encode_raw(pixels)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Decode normalised latents into a video.

        Args:
            latents: [1, 16, F_lat, h, w]

        Returns:
            RGB in [0, 1], float32 on the CPU. [4 (F_lat - 1) + 1, 8 h, 8 w, 3]
        """
        if latents.ndim != 5 or latents.shape[0] != 1 or latents.shape[1] != self.latent_channels:
            raise InputError(
                f"latents: expected [1, {self.latent_channels}, F_lat, h, w], got {list(latents.shape)}"
            )
        with self._active(self.vae) as vae:
            mean = self._latents_mean.to(self.device)
            std = self._latents_std.to(self.device)
            z = latents.to(self.device, torch.float32) * std + mean
            video = vae.decode(z.to(vae.dtype)).sample
        video = (video.float().clamp(-1, 1) + 1.0) / 2.0
        return video[0].permute(1, 2, 3, 0).cpu()

    # ---- text ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> Tensor:
        """UMT5 embeddings as the Wan pipelines make them (padding positions zeroed). ``-> [B, L, D]`` float32."""
        if self.text_encoder is None or self.tokenizer is None:
            raise CapabilityError(
                f"model {self.name}: no text encoder loaded; pass cached prompt embeddings "
                f"(WanPrior.from_pretrained(..., text_encoder=True) loads it)"
            )
        prompts = [_prompt_clean(p) for p in prompts]
        inputs = self.tokenizer(
            prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )
        ids, mask = inputs.input_ids, inputs.attention_mask
        with self._active(self.text_encoder) as encoder:
            hidden = encoder(ids.to(self.device), mask.to(self.device)).last_hidden_state.float()
        keep = mask.to(hidden.device)[..., None].float()
        return hidden * keep

    def prompt_embeddings(
        self,
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        cache_path: str | os.PathLike | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Embeddings of a prompt and its negative, from ``cache_path`` when it holds these prompts.

        Computed embeddings are written to ``cache_path`` (if given), so later runs can drop the text encoder.
        """
        if cache_path is not None:
            cached = load_prompt_embeds(cache_path, prompt=prompt, negative_prompt=negative_prompt)
            if cached is not None and cached[1] is not None:
                logger.info("prompt embeddings from %s", cache_path)
                return cached[0], cached[1]
        both = self.encode_prompt([prompt, negative_prompt])
        pos, neg = both[:1], both[1:]
        if cache_path is not None:
            save_prompt_embeds(cache_path, pos, neg, prompt=prompt, negative_prompt=negative_prompt, model=self.name)
        return pos, neg

    def release_text_encoder(self) -> None:
        """Drop the text encoder and tokenizer (cached embeddings replace them)."""
        self.text_encoder = None
        self.tokenizer = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---- conditioning ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare_conditions(
        self,
        *,
        prompt_embeds: Tensor,
        negative_prompt_embeds: Tensor | None = None,
        num_frames: int,
        height: int,
        width: int,
        pose_video: Tensor | None = None,
        reference_image: Tensor | None = None,
        conditioning_scale: float = 1.0,
    ) -> WanConditions:
        """Encode everything the velocity conditions on, once per video.

        Args:
            prompt_embeds: [1, L, D]
            negative_prompt_embeds: [1, L, D] or None (no CFG possible then).
            num_frames, height, width: Size of the video being restored.
            pose_video: VACE control video in [0, 1] (OpenPose skeletons on black). [F, H, W, 3]
            reference_image: VACE reference image in [0, 1], any size; padded, never stretched. [h, w, 3]
            conditioning_scale: VACE control strength.

        Raises:
            InputError: Shapes that do not fit the video, or VACE inputs for a T2V model.
        """
        check_video_size(num_frames, height, width)
        text_dim = int(self.transformer.config.text_dim)
        for name, emb in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
            if emb is not None and (emb.ndim != 3 or emb.shape[0] != 1 or emb.shape[2] != text_dim):
                raise InputError(f"{name}: expected [1, L, {text_dim}], got {list(emb.shape)}")
        prompt_embeds = prompt_embeds.to(self.device, self.dtype)
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds.to(self.device, self.dtype)
        if self.kind != "vace":
            if pose_video is not None or reference_image is not None:
                raise InputError(
                    f"model {self.name} is text-to-video: pose_video/reference_image need a VACE model"
                )
            return WanConditions(prompt_embeds, negative_prompt_embeds)

        if pose_video is not None:
            _check_video(pose_video, "pose_video")
            if tuple(pose_video.shape[:3]) != (num_frames, height, width):
                raise InputError(
                    f"pose_video: expected [{num_frames}, {height}, {width}, 3], got {list(pose_video.shape)}"
                )
            control = pose_video.float().permute(3, 0, 1, 2)[None] * 2.0 - 1.0
        else:
            control = torch.zeros(1, 3, num_frames, height, width)
        # VACE mask: 1 everywhere = "generate every pixel, guided by the control video" (pose-control mode).
        # The masked-out ("inactive") video is then all zeros: its latents depend only on the size, so they
        # are cached across restorations.
        mask = torch.ones(num_frames, height, width)
        key = (num_frames, height, width)
        if key not in self._inactive_cache:
            self._inactive_cache = {key: self._encode_raw(control * (1.0 - mask))}
        inactive = self._inactive_cache[key]
        reactive = self._encode_raw(control * mask)
        video_latents = torch.cat([inactive, reactive], dim=1)
        num_latent_frames = video_latents.shape[2]
        mask_latents = vace_mask_latents(mask, num_latent_frames, self.spatial_factor,
                                         int(self.transformer.config.patch_size[1]))[None].to(video_latents.device)

        reference_latents = None
        if reference_image is not None:
            canvas = pad_reference_image(reference_image.float().cpu(), height, width)
            pixels = canvas.permute(2, 0, 1)[None, :, None] * 2.0 - 1.0
            reference_latents = self._encode_raw(pixels)
            ref_control = torch.cat([reference_latents, torch.zeros_like(reference_latents)], dim=1)
            video_latents = torch.cat([ref_control, video_latents], dim=2)
            mask_latents = torch.cat([torch.zeros_like(mask_latents[:, :, :1]), mask_latents], dim=2)
        control_latents = torch.cat([video_latents, mask_latents], dim=1).to(self.dtype)
        return WanConditions(prompt_embeds, negative_prompt_embeds, control_latents, reference_latents,
                             float(conditioning_scale))

    # ---- velocity --------------------------------------------------------------------------------------------
    def _expert(self, timestep: float) -> torch.nn.Module:
        """The transformer for this timestep (Wan2.2: high-noise expert above the boundary, low-noise below)."""
        if self.transformer_2 is None or self.boundary_ratio is None:
            return self.transformer
        return self.transformer if timestep >= self.boundary_ratio * NUM_TRAIN_TIMESTEPS else self.transformer_2

    def velocity(
        self,
        conditions: WanConditions,
        cfg_scale: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Velocity:
        """A ``velocity(x, sigma) -> v`` callable for the samplers, with CFG and conditioning inside.

        ``v = v_uncond + s (v_cond - v_uncond)`` with ``s = cfg_scale`` (default: the model's, 5 for VACE,
        2 for T2V); ``s = 1`` or no negative embeddings run the conditional branch alone.

        For VACE with a reference image the denoised latents carry R extra leading frames (the pipeline's
        layout). Our state ``x`` holds only the video frames, so the reference slot is filled with the
        reference latents noised to the current sigma with noise drawn once from ``generator``
        (``(1 - sigma) ref + sigma eps_ref``), and its velocity is dropped.

        Args:
            conditions: From ``prepare_conditions``.
            cfg_scale: Guidance scale.
            generator: Draws the reference slot's noise (seeded = deterministic).

        Returns:
            ``velocity(x [1, 16, F_lat, h, w] float32, sigma) -> v`` of the same shape and dtype.
        """
        scale = self.default_cfg if cfg_scale is None else float(cfg_scale)
        use_cfg = scale != 1.0 and conditions.negative_prompt_embeds is not None
        if scale != 1.0 and conditions.negative_prompt_embeds is None:
            logger.warning("cfg_scale %.2f ignored: no negative prompt embeddings", scale)
        ref = conditions.reference_latents
        ref_noise = None
        if ref is not None:
            ref_noise = torch.randn(ref.shape, generator=generator, dtype=torch.float32,
                                    device=generator.device if generator is not None else "cpu").to(ref.device)

        def velocity(x: Tensor, sigma: float | Tensor) -> Tensor:
            sigma_f = float(sigma)
            timestep_value = sigma_f * NUM_TRAIN_TIMESTEPS
            expert = self._expert(timestep_value)
            with torch.no_grad(), self._active(expert) as model:
                hidden = x.to(self.device, torch.float32)
                if ref is not None:
                    ref_state = (1.0 - sigma_f) * ref + sigma_f * ref_noise
                    hidden = torch.cat([ref_state.to(hidden.device), hidden], dim=2)
                hidden = hidden.to(self.dtype)
                timestep = torch.full((hidden.shape[0],), timestep_value, device=self.device, dtype=torch.float32)
                extra = {}
                if conditions.control_latents is not None:
                    n_vace = len(model.config.vace_layers)
                    extra = {
                        "control_hidden_states": conditions.control_latents,
                        "control_hidden_states_scale": torch.full(
                            (n_vace,), conditions.conditioning_scale, device=self.device, dtype=self.dtype),
                    }
                v = model(hidden_states=hidden, timestep=timestep, encoder_hidden_states=conditions.prompt_embeds,
                          return_dict=False, **extra)[0].float()
                if use_cfg:
                    v_u = model(hidden_states=hidden, timestep=timestep,
                                encoder_hidden_states=conditions.negative_prompt_embeds,
                                return_dict=False, **extra)[0].float()
                    v = v_u + scale * (v - v_u)
            if ref is not None:
                v = v[:, :, ref.shape[2]:]
            return v.to(x.device, x.dtype)

        return velocity


