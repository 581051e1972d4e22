"""Benchmark the photo reconstruction on a synthetic subject with known truth.

A textured Gaussian subject with a skirt (backend.reconstruct.synthetic) is posed with frame 0 of a built-in
motion and rendered from a front camera; that image (RGBA) and camera are the reference. The reconstruction is
then rendered next to the truth from the front (reference) view and three other views (side, back, other
side); the script prints iterations/s, masked PSNR and silhouette IoU per view, and optionally writes
comparison PNGs.

    .venv/bin/python scripts/bench_reconstruct.py --quality preview [--images docs/images]
"""

from __future__ import annotations

import argparse
import os
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.body import load_body_model  # noqa: E402
from backend.motion.builtin import builtin_motion  # noqa: E402
from backend.motion.skinning import skin_gaussians  # noqa: E402
from backend.reconstruct.photo_fit import photo_fit_settings_for, reconstruct_photo, with_settings  # noqa: E402
from backend.reconstruct.inputs import load_reference_view  # noqa: E402
from backend.reconstruct.synthetic import photo_cameras, skirted_subject  # noqa: E402
from backend.render.metrics import masked_psnr, silhouette_iou  # noqa: E402
from backend.render.render import RenderSettings, render  # noqa: E402

VIEWS = {"front (reference)": 0.0, "side (left)": 90.0, "back": 180.0, "side (right)": 270.0}


def posed(gaussians, transforms):
    means, quats = skin_gaussians(gaussians, None, transforms[None])
    return gaussians.replace(means=means[0], quats=quats[0])


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    body = load_body_model("default")
    motion = builtin_motion(args.motion, body, frames=8)
    generator = torch.Generator().manual_seed(args.seed)
    truth = skirted_subject(body, args.truth_gaussians, generator)
    width, height = args.width, args.height
    out = body(None, torch.as_tensor(motion.root_orient[:1]), torch.as_tensor(motion.pose_body[:1]),
               torch.as_tensor(motion.trans[:1]))
    transforms = out.joint_transforms[0]
    center = out.vertices[0].mean(0) * torch.tensor([1.0, 1.0, 0.0]) + torch.tensor([0.0, 0.0, 0.86])
    cams = photo_cameras(center, list(VIEWS.values()), width=width, height=height)
    settings = RenderSettings(backend="torch")
    truth_posed = posed(truth, transforms)
    with torch.no_grad():
        truth_views = render(truth_posed, cams, settings=settings)

    work = Path(tempfile.mkdtemp(prefix="bench_reconstruct_"))
    from PIL import Image

    rgba = torch.cat([truth_views.rgb[0], truth_views.alpha[0]], dim=-1)
    image_path = work / "reference.png"
    Image.fromarray((rgba.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy(), "RGBA").save(image_path)
    camera = cams[0].to_dicts()[0]
    (work / "camera.json").write_text(json.dumps(camera))

    warnings: list[str] = []
    view = load_reference_view(image_path, camera, body, motion, 0, warnings)
    fit_settings = photo_fit_settings_for(args.quality)
    changes = {k: v for k, v in (("iterations", args.iterations), ("resolution", args.resolution)) if v is not None}
    for item in args.set:
        key, _, value = item.partition("=")
        changes[key] = type(getattr(fit_settings, key))(value)
    fit_settings = with_settings(fit_settings, **changes)
    started = time.perf_counter()
    from backend.reconstruct.backfill import BackfillSettings

    backfill = BackfillSettings() if args.min_visibility is None else BackfillSettings(
        min_visibility=args.min_visibility)
    rec = reconstruct_photo(view, body, None, args.gaussians, torch.Generator().manual_seed(args.seed + 1),
                            fit_settings, backfill=backfill)
    total = time.perf_counter() - started
    rec_posed = posed(rec.canonical, transforms)
    with torch.no_grad():
        rec_views = render(rec_posed, cams, settings=settings)
    rows = {}
    for i, name in enumerate(VIEWS):
        rows[name] = {
            "psnr": masked_psnr(rec_views.rgb[i], truth_views.rgb[i], truth_views.alpha[i, ..., 0]),
            "iou": silhouette_iou(rec_views.alpha[i, ..., 0], truth_views.alpha[i, ..., 0]),
        }
    # The reference view at half the photo's resolution, against the photo averaged over 2×2 pixels, rendered
    # classic and antialiased (a subject fitted at one resolution, seen at another).
    half_cam = cams[0:1].resized(width // 2, height // 2)
    resolutions = {}
    pool = lambda x: torch.nn.functional.avg_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)  # noqa: E731
    ref_rgb, ref_alpha = pool(truth_views.rgb[0:1])[0], pool(truth_views.alpha[0:1])[0, ..., 0]
    for mode in ("classic", "antialiased"):
        rs = RenderSettings(backend="torch", antialiased=mode == "antialiased")
        with torch.no_grad():
            full = render(rec_posed, cams[0:1], settings=rs)
            half = render(rec_posed, half_cam, settings=rs)
        union_full = torch.maximum(full.alpha[0, ..., 0], truth_views.alpha[0, ..., 0])
        union_half = torch.maximum(half.alpha[0, ..., 0], ref_alpha)
        resolutions[mode] = {
            "full_psnr": masked_psnr(full.rgb[0], truth_views.rgb[0], union_full),
            "half_psnr": masked_psnr(half.rgb[0], ref_rgb, union_half),
            "half_iou": silhouette_iou(half.alpha[0, ..., 0], ref_alpha),
        }
    # supersampled: the classic render at the photo's size, averaged over 2×2 pixels
    rs = RenderSettings(backend="torch")
    with torch.no_grad():
        full = render(rec_posed, cams[0:1], settings=rs)
    half_rgb = pool(full.rgb)[0]
    half_alpha = pool(full.alpha)[0, ..., 0]
    union_half = torch.maximum(half_alpha, ref_alpha)
    union_full = torch.maximum(full.alpha[0, ..., 0], truth_views.alpha[0, ..., 0])
    resolutions["supersampled"] = {
        "full_psnr": masked_psnr(full.rgb[0], truth_views.rgb[0], union_full),
        "half_psnr": masked_psnr(half_rgb, ref_rgb, union_half),
        "half_iou": silhouette_iou(half_alpha, ref_alpha),
    }
    result = {
        "quality": args.quality,
        "gaussians": rec.canonical.num_gaussians,
        "truth_gaussians": truth.num_gaussians,
        "image": [width, height],
        "fit_resolution": rec.fit.metrics["resolution"],
        "iterations": rec.fit.metrics["iterations"],
        "fit_seconds": rec.fit.metrics["seconds"],
        "iterations_per_s": rec.fit.metrics["iterations_per_s"],
        "total_seconds": total,
        "fit_view_psnr": rec.fit.metrics["psnr"],
        "fit_view_iou": rec.fit.metrics["iou"],
        "seen_fraction": float(rec.seen.float().mean()),
        "loose_fraction": float(rec.canonical.loose.float().mean()),
        "views": rows,
        "reference_view_by_resolution": resolutions,
        "warnings": warnings,
    }
    if args.images:
        out_dir = Path(args.images)
        out_dir.mkdir(parents=True, exist_ok=True)
        tiles = []
        for i in range(len(VIEWS)):
            pair = torch.cat([truth_views.rgb[i], rec_views.rgb[i]], dim=0)  # truth above, reconstruction below
            tiles.append(pair)
        sheet = torch.cat(tiles, dim=1)
        Image.fromarray((sheet.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()).save(
            out_dir / f"reconstruct_{args.quality}_views.png")
        # The reconstruction animated: every other motion frame, seen from a three-quarter view.
        with torch.no_grad():
            frames = body(None, torch.as_tensor(motion.root_orient), torch.as_tensor(motion.pose_body),
                          torch.as_tensor(motion.trans))
            middle = frames.joints[:, 0].mean(0) * torch.tensor([1.0, 1.0, 0.0]) + torch.tensor([0.0, 0.0, 0.86])
            travel = float((frames.joints[-1, 0] - frames.joints[0, 0]).norm())
            cam = photo_cameras(middle, [35.0], width=width, height=height, distance=3.4 + 1.5 * travel)
            strip = [render(posed(rec.canonical, frames.joint_transforms[f]), cam, settings=settings).rgb[0]
                     for f in range(0, motion.num_frames, 2)]
        Image.fromarray((torch.cat(strip, dim=1).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()).save(
            out_dir / f"reconstruct_{args.quality}_motion.png")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quality", default="preview", choices=("preview", "standard", "high"))
    p.add_argument("--gaussians", type=int, default=40_000, help="requested Gaussians (capped by the preset)")
    p.add_argument("--truth-gaussians", type=int, default=12_000)
    p.add_argument("--iterations", type=int, default=None, help="override the preset's iterations")
    p.add_argument("--resolution", type=int, default=None, help="override the preset's fit resolution")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any PhotoFitSettings field, e.g. --set lr_offset=0.005")
    p.add_argument("--min-visibility", type=float, default=None,
                   help="back fill: a Gaussian is seen from this visible fraction (default BackfillSettings')")
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--motion", default="walk", choices=("walk", "twirl"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", default=None, help="write a truth/reconstruction contact sheet here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 avoids OpenMP spin-waiting next to other busy processes)")
    p.add_argument("--backend", default=None, choices=("torch", "numba", "gsplat"),
                        help="renderer for the run (sets ANI3D_RENDER_BACKEND; default: render()'s auto choice)")
    args = p.parse_args()
    if args.backend:
        os.environ["ANI3D_RENDER_BACKEND"] = args.backend
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"quality {result['quality']}: {result['gaussians']} Gaussians (truth {result['truth_gaussians']}), "
          f"image {result['image'][0]}x{result['image'][1]}, fit crop {result['fit_resolution'][0]}x"
          f"{result['fit_resolution'][1]}")
    print(f"fit: {result['iterations']} iterations in {result['fit_seconds']:.1f} s = "
          f"{result['iterations_per_s']:.2f} it/s; total reconstruct {result['total_seconds']:.1f} s; "
          f"seen {100 * result['seen_fraction']:.0f}%, loose {100 * result['loose_fraction']:.0f}%")
    print(f"on the fit crop itself (before the back fill): masked PSNR {result['fit_view_psnr']:.2f} dB, "
          f"IoU {result['fit_view_iou']:.3f}")
    print(f"{'view':<20} {'masked PSNR (dB)':>17} {'silhouette IoU':>15}")
    for name, row in result["views"].items():
        print(f"{name:<20} {row['psnr']:>17.2f} {row['iou']:>15.3f}")
    print(f"reference view at the photo's size and at half of it (masked over the union of both silhouettes):")
    print(f"{'render mode':<13} {'full PSNR':>10} {'half PSNR':>10} {'half IoU':>9}")
    for mode, row in result["reference_view_by_resolution"].items():
        print(f"{mode:<13} {row['full_psnr']:>10.2f} {row['half_psnr']:>10.2f} {row['half_iou']:>9.3f}")
    for w in result["warnings"]:
        print("warning:", w)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
