#!/usr/bin/env python
"""Benchmark the restoration stage with the Wan prior.

CUDA mode (default): a full-size random-initialised Wan2.1-1.3B-architecture model (T2V or VACE; bf16
transformer, float32 VAE with tiling, model CPU offload) is written in the diffusers layout, loaded through
``WanPrior.from_pretrained`` and used by ``backend.diffusion.restore.restore`` on an 81-frame 480x832 video
with 10 self-guided steps and CFG. Prints time per phase and peak GPU memory. The paper reports about 67 s per
restoration; our target is <= 67 s on an H100 and <= 24 GB peak with offload.

Without CUDA it prints "needs CUDA" and exits 0. ``--cpu-tiny`` instead times single steps of a tiny
random model on the CPU (a smoke number, not a performance claim).

    .venv/bin/python scripts/bench_wan.py [--kind vace|t2v] [--offload model|none|group] [--repeats 2]
    .venv/bin/python scripts/bench_wan.py --cpu-tiny
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.diffusion.restore import RestoreConditions, RestoreSettings, restore  # noqa: E402
from backend.diffusion.wan import WanPrior  # noqa: E402
from backend.diffusion.wan_random import save_random_wan  # noqa: E402


def _inputs(frames: int, height: int, width: int, text_dim: int, kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(frames, height, width, 3, generator=g)
    mask = torch.zeros(frames, height, width)
    mask[:, : height // 4] = 1.0  # the "head" quarter is preserved
    conditions = dict(
        prompt_embeds=torch.randn(1, 512, text_dim, generator=g),
        negative_prompt_embeds=torch.randn(1, 512, text_dim, generator=g),
        preserve_mask=mask,
    )
    if kind == "vace":
        pose = torch.zeros(frames, height, width, 3)
        pose[:, height // 3: height // 3 + 8, width // 4: 3 * width // 4] = torch.tensor([1.0, 0.33, 0.0])
        conditions.update(pose_video=pose, reference_image=torch.rand(1024, 768, 3, generator=g))
    return coarse, RestoreConditions(**conditions)


def bench_cuda(args: argparse.Namespace) -> int:
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = save_random_wan(Path(tmp) / "wan", arch="1.3b", kind=args.kind, dtype=torch.bfloat16,
                                 text_encoder=False, device=device)
        torch.cuda.empty_cache()
        print(f"random 1.3B {args.kind} model written in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        prior = WanPrior.from_pretrained(folder, device=device, offload=args.offload,
                                         vae_tiling=not args.no_tiling, text_encoder=False)
        print(f"loaded in {time.perf_counter() - t0:.1f} s (offload={args.offload}, "
              f"vae_tiling={not args.no_tiling})")
        coarse, conditions = _inputs(args.frames, args.height, args.width, int(prior.transformer.config.text_dim),
                                     args.kind)
        settings = RestoreSettings(steps=args.steps, strength=0.6, guidance=0.1, cfg=args.cfg)
        totals, peaks = [], []
        for r in range(args.repeats):
            marks: list[tuple[float, str]] = []

            def progress(fraction: float, message: str) -> None:
                torch.cuda.synchronize()
                marks.append((time.perf_counter(), message))

            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
            start = time.perf_counter()
            video = restore(coarse, None, conditions, settings, progress, prior=prior)
            torch.cuda.synchronize()
            total = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated() / 2**30
            reserved = torch.cuda.max_memory_reserved() / 2**30
            totals.append(total)
            peaks.append(peak)
            phases = {}
            previous = start
            for t, message in marks:
                key = "sampling" if "step" in message else message.split(": ")[-1].split(" in ")[0]
                phases[key] = phases.get(key, 0.0) + (t - previous)
                previous = t
            print(f"run {r + 1}: total {total:.1f} s, peak allocated {peak:.1f} GiB (reserved {reserved:.1f}), "
                  f"video {tuple(video.shape)}; phases (s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
        print(f"| frames | size | steps | cfg | offload | median total (s) | peak GPU (GiB) |")
        print(f"| {args.frames} | {args.width}x{args.height} | {args.steps} | {settings.cfg or prior.default_cfg} "
              f"| {args.offload} | {statistics.median(totals):.1f} | {max(peaks):.1f} |")
    return 0


def bench_cpu_tiny(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        prior = WanPrior.from_pretrained(save_random_wan(Path(tmp) / "wan", kind=args.kind), device="cpu")
        coarse, conditions = _inputs(5, 32, 32, int(prior.transformer.config.text_dim), args.kind)
        pos, neg = conditions.prompt_embeds, conditions.negative_prompt_embeds
        kw = {}
        if args.kind == "vace":
            kw = dict(pose_video=conditions.pose_video, reference_image=conditions.reference_image)
        wan_conditions = prior.prepare_conditions(prompt_embeds=pos, negative_prompt_embeds=neg, num_frames=5,
                                                  height=32, width=32, **kw)
        velocity = prior.velocity(wan_conditions, generator=torch.Generator().manual_seed(0))
        x = prior.encode(coarse)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            velocity(x, torch.tensor(0.5))
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        restore(coarse, None, conditions, RestoreSettings(steps=3), prior=prior)
        full = time.perf_counter() - t
    print(f"tiny {args.kind} model, 5x32x32, CFG {prior.default_cfg}: one velocity call median "
          f"{statistics.median(times) * 1e3:.1f} ms over {len(times)}; full 3-step restore {full:.2f} s (CPU)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("vace", "t2v"), default="vace")
    parser.add_argument("--offload", choices=("model", "none", "group"), default="model")
    parser.add_argument("--no-tiling", action="store_true", help="disable VAE tiling")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=832)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cfg", type=float, default=None, help="default: the model's (5 VACE, 2 T2V)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpu-tiny", action="store_true", help="time single steps of a tiny model on the CPU")
    args = parser.parse_args(argv)
    if args.cpu_tiny:
        args.repeats = max(args.repeats, 5)
        return bench_cpu_tiny(args)
    if not torch.cuda.is_available():
        print("needs CUDA: the full-size Wan2.1-1.3B benchmark runs only on an NVIDIA GPU; nothing was measured. "
              "Run with --cpu-tiny for a tiny-model CPU smoke timing.")
        return 0
    return bench_cuda(args)


if __name__ == "__main__":
    raise SystemExit(main())
