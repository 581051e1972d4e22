"""Benchmark the residual-field fit: iterations/s at 40k Gaussians, 256², and the time of a preview-preset fit.

Usage: .venv/bin/python scripts/bench_fit.py [--gaussians 40000] [--size 256] [--steps 5] [--threads 0]
                                             [--preview-gaussians 40000] [--preview-iterations N] [--skip-preview]

One fit iteration = field query for every Gaussian + layered skinning + one render (forward + backward) +
losses + Adam step. Runs on CPU, and on CUDA as well when it is available. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def build(num_gaussians: int, width: int, height: int, frames: int, device: torch.device, preset_name: str | None):
    from backend.body import load_body_model
    from backend.motion.builtin import builtin_motion
    from backend.motion.layered import layered_frame
    from backend.motion.residual import FieldConfig, ResidualField, bounds_from_points
    from backend.reconstruct import sample_body_gaussians
    from backend.render import RenderSettings, diagonal_trajectory, frame_subject, render
    from backend.train.dataset import VideoClip, VideoDataset, even_motion_frames
    from backend.stages.presets import field_config_for
    from backend.stages.presets import preset

    body = load_body_model("default")
    motion = builtin_motion("walk", body, frames=frames)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        posed = body(t(motion.betas), t(motion.root_orient), t(motion.pose_body), t(motion.trans))
    canonical = sample_body_gaussians(body, None, num_gaussians, torch.Generator().manual_seed(0)).to(device)
    transforms = posed.joint_transforms.float().to(device)
    traj = diagonal_trajectory(frame_subject(posed.vertices), num_frames=9, width=width, height=height)
    motion_frames = even_motion_frames(9, frames)
    rs = RenderSettings(background=(1.0, 1.0, 1.0))
    with torch.no_grad():  # a target video: the rigid render (content does not change the cost much)
        video = torch.stack([render(layered_frame(canonical, None, transforms[f], 0.0), traj.cameras[i:i + 1].to(device),
                                    settings=rs).rgb[0].cpu() for i, f in enumerate(motion_frames.tolist())])
    dataset = VideoDataset([VideoClip("bench", video, traj.cameras, motion_frames)], frames)
    if preset_name is None:
        config = FieldConfig(bounds=bounds_from_points(canonical.means))  # the paper's field: 64², 25, 32 ch, ×1 ×2
    else:
        config = field_config_for(canonical, preset(preset_name))
    field_ = ResidualField(config, torch.Generator().manual_seed(0)).to(device)
    return canonical, transforms, dataset, field_


def time_steps(device: torch.device, args) -> dict:
    from backend.train.field_fit import create_fit_state, fit_step
    from backend.train.losses import stillness_weights
    from backend.stages.presets import BACKGROUND
    from backend.train.field_fit import FieldFitSettings

    canonical, transforms, dataset, field_ = build(args.gaussians, args.size, args.size, 33, device, None)
    settings = FieldFitSettings(iterations=1000, background=BACKGROUND)
    state = create_fit_state(field_, settings, 0)
    weights = stillness_weights(canonical, settings.identity_weight, settings.body_weight)
    fit_step(state, canonical, transforms, dataset, settings, weights)  # warm-up
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fit_step(state, canonical, transforms, dataset, settings, weights)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"device": device.type, "threads": torch.get_num_threads(), "gaussians": args.gaussians,
            "size": f"{args.size}x{args.size}", "s_per_it": med, "it_per_s": 1.0 / med}


def time_preview_fit(device: torch.device, args) -> dict:
    from backend.train.field_fit import create_fit_state, fit_field
    from backend.stages.presets import field_fit_settings_for
    from backend.stages.presets import preset

    p = preset("preview")
    iterations = args.preview_iterations or p.iterations
    canonical, transforms, dataset, field_ = build(args.preview_gaussians, p.width, p.height, 33, device, "preview")
    settings = field_fit_settings_for(p, iterations=iterations)
    state = create_fit_state(field_, settings, 0)
    t0 = time.perf_counter()
    fit_field(state, canonical, transforms, dataset, settings)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    return {"device": device.type, "gaussians": args.preview_gaussians, "size": f"{p.width}x{p.height}",
            "iterations": iterations, "seconds": total, "it_per_s": iterations / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=40_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--preview-gaussians", type=int, default=40_000)
    parser.add_argument("--preview-iterations", type=int, default=None, help="default: the preset's")
    parser.add_argument("--skip-preview", action="store_true")
    parser.add_argument("--backend", default=None, choices=("torch", "numba", "gsplat"),
                        help="renderer for the run (sets ANI3D_RENDER_BACKEND; default: render()'s auto choice)")
    args = parser.parse_args()
    if args.backend:
        os.environ["ANI3D_RENDER_BACKEND"] = args.backend
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print("| device | threads | Gaussians | size | s / iteration | iterations / s |")
    print("|---|---|---|---|---|---|")
    for device in devices:
        r = time_steps(device, args)
        print(f"| {r['device']} | {r['threads']} | {r['gaussians']} | {r['size']} | {r['s_per_it']:.3f} | "
              f"{r['it_per_s']:.2f} |", flush=True)
    if args.skip_preview:
        return
    print()
    print("| device | preview fit: Gaussians | size | iterations | seconds | iterations / s |")
    print("|---|---|---|---|---|---|")
    for device in devices:
        r = time_preview_fit(device, args)
        print(f"| {r['device']} | {r['gaussians']} | {r['size']} | {r['iterations']} | {r['seconds']:.1f} | "
              f"{r['it_per_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
