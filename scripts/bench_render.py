#!/usr/bin/env python
"""Benchmark ``backend.render.render``: forward and forward+backward seconds and peak memory.

Scenes are the synthetic standing figure of ``backend.render.scenes`` (Gaussians of 1–2 cm on a body surface,
framed to fill the image), one camera, white background. Each configuration runs in a fresh subprocess so
that the peak resident memory (``ru_maxrss``) belongs to it alone; times are medians over repeats after one
warm-up. Prints a Markdown table.

    .venv/bin/python scripts/bench_render.py      # 20k/40k/100k x 256²/512², torch and numba side by side
    .venv/bin/python scripts/bench_render.py --configs 40000x256 --repeats 7 --threads 2
    .venv/bin/python scripts/bench_render.py --device cuda --backends gsplat torch
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_one(n: int, res: int, backend: str, device: str, repeats: int, backward: bool,
            threads: int | None = None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)

    from backend.render import RenderSettings, frame_subject, orbit_cameras, render
    from backend.render.scenes import body_gaussians

    g = body_gaussians(n, generator=torch.Generator().manual_seed(0)).to(device)
    framing = frame_subject(g.means.cpu(), width=res, height=res, margin=1.05)
    cams = orbit_cameras(framing, num_frames=8, start_azimuth_deg=20.0, width=res, height=res)[0:1]
    settings = RenderSettings(backend=backend, background=(1.0, 1.0, 1.0))

    def forward() -> float:
        _sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            out = render(g, cams, settings=settings)
        _sync(device)
        forward.backend = out.backend
        return time.perf_counter() - t

    def forward_backward() -> float:
        leaves = {k: getattr(g, k).detach().clone().requires_grad_(True)
                  for k in ("means", "quats", "log_scales", "opacity_logits", "sh")}
        gg = g.replace(**leaves)
        _sync(device)
        t = time.perf_counter()
        out = render(gg, cams, settings=settings)
        (out.rgb.sum() + out.alpha.sum()).backward()
        _sync(device)
        return time.perf_counter() - t

    forward()
    fwd = statistics.median(forward() for _ in range(repeats))
    fwd_bwd = None
    if backward:
        forward_backward()
        fwd_bwd = statistics.median(forward_backward() for _ in range(repeats))
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    if device == "cuda":
        peak_gib = torch.cuda.max_memory_allocated() / 2**30
    return {"n": n, "res": res, "backend": forward.backend, "device": device, "forward_s": fwd,
            "forward_backward_s": fwd_bwd, "peak_gib": peak_gib, "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+",
                        default=["20000x256", "40000x256", "20000x512", "100000x256", "100000x512"],
                        help="NxRES items (Gaussians x square image size)")
    parser.add_argument("--backends", nargs="+", default=["torch", "numba"],
                        choices=("auto", "torch", "numba", "gsplat"), help="measured side by side, in one run")
    parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)  # internal, with --one
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-backward", action="store_true", help="forward only")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one config, print JSON
    args = parser.parse_args()

    if args.one:
        n, res = (int(v) for v in args.one.split("x"))
        print(json.dumps(run_one(n, res, args.backend, args.device, args.repeats, not args.no_backward,
                                 args.threads)))
        return 0

    rows = []
    for config, backend in [(c, b) for c in args.configs for b in args.backends]:
        cmd = [sys.executable, __file__, "--one", config, "--backend", backend, "--device", args.device,
               "--repeats", str(args.repeats)] + (["--no-backward"] if args.no_backward else [])
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        # OpenMP threads that spin while waiting make 2 threads on 2 busy cores 5-10x slower than 1 thread;
        # passive waiting is what a shared machine needs (override by setting OMP_WAIT_POLICY yourself).
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if result.returncode != 0:
            print(f"{config}: failed\n{result.stderr}", file=sys.stderr)
            return 1
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"# {config} {backend}: forward {r['forward_s']:.3f} s, forward+backward "
              f"{r['forward_backward_s'] if r['forward_backward_s'] is not None else float('nan'):.3f} s, "
              f"peak {r['peak_gib']:.2f} GiB", file=sys.stderr, flush=True)

    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"on {os.cpu_count()} CPUs (other processes slow these numbers down); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}\n")
    print(f"| Gaussians | image | backend ({rows[0]['device']}, {rows[0]['threads']} threads) | forward s "
          "| forward+backward s | peak memory GiB | forward+backward vs torch |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    torch_fb = {(r["n"], r["res"]): r["forward_backward_s"] for r in rows if r["backend"] == "torch"}
    for r in rows:
        fb = "—" if r["forward_backward_s"] is None else f"{r['forward_backward_s']:.3f}"
        ref = torch_fb.get((r["n"], r["res"]))
        ratio = f"{ref / r['forward_backward_s']:.1f}×" if ref and r["forward_backward_s"] else "—"
        print(f"| {r['n']:,} | {r['res']}² | {r['backend']} | {r['forward_s']:.3f} | {fb} | {r['peak_gib']:.2f} "
              f"| {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
