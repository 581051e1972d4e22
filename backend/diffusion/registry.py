"""The video priors we support, where their weights are, and whether this machine can run them.

A model is named either by its Hugging Face repository id (looked up in the local Hugging Face cache, never
downloaded unless the caller allows it) or by a folder holding a diffusers layout (``model_index.json``,
``transformer/``, ``vae/``, optionally ``text_encoder/`` and ``tokenizer/``).

The size of a model is read from its ``transformer/config.json`` before any weight is loaded, so a large model
on a machine without CUDA is refused at once (``CapabilityError``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from backend.core.errors import CapabilityError, InputError

logger = logging.getLogger(__name__)

KINDS = ("t2v", "vace")

# Models above this many transformer parameters need CUDA (a 14B model would take days on a CPU).
LARGE_MODEL_PARAMS = 3.0e9

# The components a folder must have to be loadable; text encoder and tokenizer are optional (cached prompt
# embeddings replace them).
REQUIRED_COMPONENTS = ("transformer", "vae")


@dataclass(frozen=True)
class ModelInfo:
    """One supported video prior.

    Attributes:
        repo_id: Hugging Face repository id (diffusers layout), exactly as ``huggingface-cli download`` takes it.
        kind: ``"t2v"`` (text-to-video, the paper's general prior) or ``"vace"`` (reference image + pose video).
        params_b: Transformer parameters in billions (per expert for two-expert models).
        size_class: ``"small"`` (runs on a 24 GB card, or slowly on a CPU) or ``"large"`` (CUDA only).
        default_cfg: Classifier-free guidance scale used when the caller gives none.
        note: One line for the ``models`` listing.
    """

    repo_id: str
    kind: str
    params_b: float
    size_class: str
    default_cfg: float
    note: str = ""


SUPPORTED_MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("Wan-AI/Wan2.1-VACE-1.3B-diffusers", "vace", 1.3, "small", 5.0,
              "default: reference image + pose video (counterpart of Wan2.1-Fun-1.3B-Control)"),
    ModelInfo("Wan-AI/Wan2.1-VACE-14B-diffusers", "vace", 14.0, "large", 5.0,
              "reference image + pose video, 14B"),
    ModelInfo("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "t2v", 1.3, "small", 2.0,
              "general text-to-video prior (paper ablation, CFG 2)"),
    ModelInfo("Wan-AI/Wan2.1-T2V-14B-Diffusers", "t2v", 14.0, "large", 2.0,
              "general text-to-video prior, 14B"),
    ModelInfo("Wan-AI/Wan2.2-T2V-A14B-Diffusers", "t2v", 14.0, "large", 2.0,
              "Wan2.2 two-expert (high/low noise) text-to-video"),
    ModelInfo("linoyts/Wan2.2-VACE-Fun-14B-diffusers", "vace", 14.0, "large", 5.0,
              "Wan2.2 VACE-Fun two-expert, community conversion (counterpart of Wan2.2-Fun-A14B-Control)"),
)

DEFAULT_MODEL = SUPPORTED_MODELS[0].repo_id


def find_model(repo_id: str) -> ModelInfo | None:
    """The supported model with this repository id (case-insensitive), or None."""
    for info in SUPPORTED_MODELS:
        if info.repo_id.lower() == repo_id.lower():
            return info
    return None


def _component_complete(folder: Path) -> bool:
    """True when a component folder has a config and every weight file it names (sharded or not)."""
    if not (folder / "config.json").is_file():
        return False
    indexes = list(folder.glob("*.safetensors.index.json"))
    if indexes:
        try:
            weight_map = json.loads(indexes[0].read_text())["weight_map"]
        except (OSError, ValueError, KeyError):
            return False
        return all((folder / shard).is_file() for shard in set(weight_map.values()))
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def missing_components(folder: Path) -> list[str]:
    """Names of the required parts a diffusers model folder lacks (empty when it looks loadable)."""
    missing = [] if (folder / "model_index.json").is_file() else ["model_index.json"]
    components = list(REQUIRED_COMPONENTS)
    index = read_model_index(folder) if not missing else {}
    if "transformer_2" in index and index["transformer_2"] and index["transformer_2"][0] is not None:
        components.append("transformer_2")
    missing += [c for c in components if not _component_complete(folder / c)]
    return missing


def read_model_index(folder: Path) -> dict:
    """The parsed ``model_index.json`` of a folder ({} when absent or unreadable)."""
    try:
        return json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}


def cached_snapshot(repo_id: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The local Hugging Face cache snapshot folder of ``repo_id`` if its ``model_index.json`` is cached."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=cache_dir)
    except ValueError:  # not a valid repository id
        return None
    if isinstance(found, str):
        return Path(found).parent
    return None


@dataclass(frozen=True)
class ModelStatus:
    """Where a supported model stands on this machine."""

    info: ModelInfo
    path: Path | None  # snapshot folder when present
    missing: tuple[str, ...]  # components not found locally ("everything" when no snapshot)

    @property
    def present(self) -> bool:
        return self.path is not None and not self.missing


def model_status(cache_dir: str | os.PathLike | None = None) -> list[ModelStatus]:
    """Presence of every supported model in the local Hugging Face cache (no network)."""
    statuses = []
    for info in SUPPORTED_MODELS:
        path = cached_snapshot(info.repo_id, cache_dir)
        missing = tuple(missing_components(path)) if path is not None else ("everything",)
        statuses.append(ModelStatus(info, path, missing))
    return statuses


def download_command(repo_id: str) -> str:
    """The shell command that downloads a model into the Hugging Face cache."""
    return f"hf download {repo_id}"


def resolve_model_path(
    path_or_repo_id: str | os.PathLike,
    *,
    allow_download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A local diffusers folder for a path or a repository id, or a clear error.

    Args:
        path_or_repo_id: An existing folder, or a Hugging Face repository id ("owner/name").
        allow_download: Download a missing repository into the Hugging Face cache (otherwise never).
        cache_dir: Hugging Face cache folder (default: the library's, ``HF_HOME``).

    Returns:
        The folder with ``model_index.json``.

    Raises:
        CapabilityError: The weights are not on this machine (names the id and the download command), or the
            folder is incomplete.
        InputError: The argument is neither a folder nor a repository id.
    """
    text = os.fspath(path_or_repo_id)
    candidate = Path(text).expanduser()
    if candidate.exists():
        if not candidate.is_dir():
            raise InputError(f"model: expected a diffusers model folder or a repository id, got the file {text}")
        folder = candidate
    else:
        looks_like_repo = text.count("/") == 1 and not text.startswith((".", "/", "~"))
        if not looks_like_repo:
            raise CapabilityError(f"model: folder {text} does not exist")
        folder = cached_snapshot(text, cache_dir)
        if folder is None or missing_components(folder):
            if not allow_download:
                where = "is not in the local Hugging Face cache" if folder is None else "is incomplete in the cache"
                raise CapabilityError(
                    f"model {text} {where}; download it with `{download_command(text)}` "
                    f"or run with --allow-download"
                )
            folder = _download(text, cache_dir)
    missing = missing_components(folder)
    if missing:
        raise CapabilityError(
            f"model folder {folder} is incomplete or corrupt: missing or unreadable {', '.join(missing)}"
        )
    return folder


def _download(repo_id: str, cache_dir: str | os.PathLike | None) -> Path:
    from huggingface_hub import snapshot_download

    logger.info("downloading %s into the Hugging Face cache (allowed by --allow-download)", repo_id)
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir))
    except Exception as exc:  # network, auth, disk: all end the same way for the user
        raise CapabilityError(f"model {repo_id}: download failed: {exc}") from exc


def transformer_params(config: dict) -> float:
    """Approximate parameter count of a Wan transformer from its config (no weights read).

    Per block: self- and cross-attention (4 d² each), the feed-forward (2 d·ffn); VACE blocks add the same
    again for each VACE layer. Accurate to a few percent for the released models (1.4e9, 1.4e10).
    """
    dim = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    per_block = 8 * dim * dim + 2 * dim * int(config["ffn_dim"])
    blocks = int(config["num_layers"]) + len(config.get("vace_layers") or [])
    return float(blocks * per_block)


def read_component_config(folder: Path, component: str) -> dict:
    """``<folder>/<component>/config.json`` parsed, or CapabilityError naming the file."""
    path = folder / component / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CapabilityError(f"model folder {folder}: cannot read {component}/config.json: {exc}") from exc


def check_runnable(folder: Path, device: str) -> float:
    """Refuse a large model on a machine without CUDA, before any weight is read.

    Returns:
        The estimated transformer parameter count.

    Raises:
        CapabilityError: The model is large and ``device`` is not CUDA.
    """
    params = transformer_params(read_component_config(folder, "transformer"))
    if params > LARGE_MODEL_PARAMS and not str(device).startswith("cuda"):
        raise CapabilityError(
            f"model {folder.name} has about {params / 1e9:.0f}B parameters and needs an NVIDIA GPU (CUDA); "
            f"this machine has none (device {device}). Use a 1.3B model or a CUDA machine."
        )
    return params


def validate_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise InputError(f"prior kind: expected one of {', '.join(KINDS)}, got {kind!r}")


def status_dicts(cache_dir: str | None = None) -> list[dict]:
    """JSON-ready status of every supported model (also what the server reports in its hello reply)."""
    return [
        {
            "id": s.info.repo_id,
            "kind": s.info.kind,
            "size_class": s.info.size_class,
            "params_b": s.info.params_b,
            "default_cfg": s.info.default_cfg,
            "present": s.present,
            "path": str(s.path) if s.path is not None else None,
            "missing": list(s.missing) if not s.present else [],
            "download": None if s.present else download_command(s.info.repo_id),
            "note": s.info.note,
        }
        for s in model_status(cache_dir)
    ]
