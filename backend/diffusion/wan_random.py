"""Random-weight Wan models in the diffusers layout, for tests, benchmarks and offline demos.

``save_random_wan(folder, arch="tiny", kind="t2v"|"vace")`` writes a folder that ``WanPrior.from_pretrained``
loads exactly like a downloaded model: same diffusers/transformers classes, ``save_pretrained`` layout,
``model_index.json``. ``arch="tiny"`` uses the configurations of diffusers' own Wan tests (runs on a CPU in
milliseconds); ``arch="1.3b"`` is the full Wan2.1-1.3B architecture (random weights, for timing on a GPU).
The tokenizer is built offline with the ``tokenizers`` package (a small Unigram vocabulary wrapped in the real
T5 tokenizer class); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

ARCHITECTURES: dict[str, dict] = {
    # diffusers tests/pipelines/wan/test_wan.py
    "tiny": dict(
        transformer=dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                         out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                         qk_norm="rms_norm_across_heads", rope_max_seq_len=32),
        vace=dict(num_layers=3, vace_layers=[0, 2], vace_in_channels=96),
        vae=dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                 temperal_downsample=[False, True, True]),
        text=dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8),
    ),
    # Wan-AI/Wan2.1-T2V-1.3B-Diffusers / Wan2.1-VACE-1.3B-diffusers transformer configs; default (released) VAE.
    "1.3b": dict(
        transformer=dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                         out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                         cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
        vace=dict(vace_layers=list(range(0, 30, 2)), vace_in_channels=96),
        vae=dict(),
        text=None,  # UMT5-XXL is 5.7B parameters: benchmarks pass prompt embeddings instead
    ),
}

_WORDS = ("a person moving clean background rotating camera photorealistic high quality low blurry "
          "static the of and , .").split()


def build_tokenizer(vocab_size: int):
    """A T5 tokenizer (transformers' T5 class) over a tiny Unigram vocabulary, built offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in _WORDS]
    if len(pieces) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tiny vocabulary ({len(pieces)})")
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0)


def build_random_wan(arch: str = "tiny", kind: str = "t2v", seed: int = 0, dtype: torch.dtype = torch.float32,
                     device: str | torch.device = "cpu", text_encoder: bool = True) -> dict:
    """Random-weight components. Returns ``{"transformer", "vae", "text_encoder"?, "tokenizer"?}``."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel, WanVACETransformer3DModel

    spec = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    with torch.device(device):
        if kind == "vace":
            transformer = WanVACETransformer3DModel(**{**spec["transformer"], **spec["vace"]})
        elif kind == "t2v":
            transformer = WanTransformer3DModel(**spec["transformer"])
        else:
            raise ValueError(f"kind: expected 't2v' or 'vace', got {kind!r}")
        vae = AutoencoderKLWan(**spec["vae"])
    if dtype != torch.float32:  # from_pretrained later restores the modules Wan keeps in float32
        transformer = transformer.to(dtype)
    parts = {"transformer": transformer, "vae": vae}
    if text_encoder and spec["text"] is not None:
        from transformers import UMT5Config, UMT5EncoderModel

        vocab = 64
        parts["text_encoder"] = UMT5EncoderModel(UMT5Config(vocab_size=vocab, **spec["text"]))
        parts["tokenizer"] = build_tokenizer(vocab)
    return parts


def save_random_wan(folder: str | os.PathLike, arch: str = "tiny", kind: str = "t2v", seed: int = 0,
                    dtype: torch.dtype = torch.float32, text_encoder: bool = True,
                    device: str | torch.device = "cpu") -> Path:
    """Write a random-weight Wan model in the diffusers folder layout and return the folder.

    ``device`` is where the weights are initialised (CUDA makes the 1.3B architecture's init fast).
    """
    folder = Path(folder)
    parts = build_random_wan(arch, kind, seed, dtype, device=device, text_encoder=text_encoder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, module in parts.items():
        module.save_pretrained(os.fspath(folder / name))
    pipeline = "WanVACEPipeline" if kind == "vace" else "WanPipeline"
    index = {
        "_class_name": pipeline,
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "transformer": ["diffusers", type(parts["transformer"]).__name__],
        "vae": ["diffusers", "AutoencoderKLWan"],
        "text_encoder": ["transformers", "UMT5EncoderModel"] if "text_encoder" in parts else [None, None],
        "tokenizer": ["transformers", "T5TokenizerFast"] if "tokenizer" in parts else [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
