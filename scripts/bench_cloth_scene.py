"""Benchmark the pipeline on the independent Blender-cloth scene (``scripts/cloth_scene.py`` builds it).

Runs what a user runs, on ground truth this project did not render:

1. ``animate`` from the scene's front photo alone (RGBA, its camera, reference frame 0) -> the rigid job;
2. the reconstruction against the photo in its own view, at the photo's resolution and at half of it (masked
   PSNR over the union of both silhouettes, silhouette IoU);
3. ``fit --videos`` on the scene's diagonal-trajectory renders (capture layout: RGBA ``0000.png``, per-camera
   ``"frame"``), with the default budget, motion only and motion + appearance;
4. held-out cameras (never in the videos): PSNR per camera, whole frame and masked to the union of
   silhouettes, silhouette IoU; a contact sheet;
5. the garment: its hem radius and its surface against Blender's simulated skirt, frame by frame.

Variants: ``cloth`` (``--dynamics cloth``), ``none`` (the garment surface skinned rigidly), ``no-garment``
(``--garment none``: every Gaussian on the body, as before the cloth layer).

    .venv/bin/python scripts/bench_cloth_scene.py --scene out/cloth_scene/twirl [--quality preview]
        [--variants cloth none no-garment] [--fit-variants cloth no-garment] [--appearance both|on|off|none]
        [--cloth-preset medium] [--iterations N] [--images docs/images] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.gaussians import load_ply  # noqa: E402
from backend.motion.motion import load_motion  # noqa: E402
from backend.render.metrics import masked_psnr, silhouette_iou  # noqa: E402
from backend.render.render import RenderSettings, antialias_for, render  # noqa: E402
from backend.stages.animate import animate  # noqa: E402
from backend.stages.job import JobSpec  # noqa: E402
from backend.stages.refit import fit_job_folder  # noqa: E402
from backend.train.dataset import load_videos, read_clip  # noqa: E402

WHITE = (1.0, 1.0, 1.0)


def photo_check(job: Path, scene: Path, density: float | None) -> dict:
    """The reconstruction in the photo's own view at full and half resolution."""
    from PIL import Image

    from backend.render.cameras import Cameras

    rgba = np.asarray(Image.open(scene / "photo.png").convert("RGBA"), dtype=np.float32) / 255.0
    photo = torch.from_numpy(rgba)
    camera = Cameras.from_dicts([json.loads((scene / "photo_camera.json").read_text())])
    frame = int(json.loads((scene / "photo.json").read_text())["reference_frame"])
    posed = load_ply(job / "frames" / f"frame_{frame:06d}.ply")
    rows = {}
    for name, scale in (("full", 1), ("half", 2)):
        cam = camera.resized(camera.width // scale, camera.height // scale)
        # the PNG's colour is straight: composite over white, then average (an area downsample of the photo)
        composited = torch.cat([photo[..., :3] * photo[..., 3:] + (1 - photo[..., 3:]), photo[..., 3:]], dim=-1)
        target = torch.nn.functional.avg_pool2d(composited.permute(2, 0, 1)[None], scale)[0].permute(1, 2, 0)
        rgb_t, alpha_t = target[..., :3], target[..., 3]
        aa = antialias_for(cam, posed.means.mean(0), density)
        with torch.no_grad():
            out = render(posed, cam, settings=RenderSettings(background=WHITE, antialiased=aa))
        union = torch.maximum(out.alpha[0, ..., 0], alpha_t)
        rows[name] = {"size": cam.width, "antialiased": aa, "psnr": masked_psnr(out.rgb[0], rgb_t, union),
                      "iou": silhouette_iou(out.alpha[0, ..., 0], alpha_t)}
    return rows


def held_out(job: Path, scene: Path, num_motion: int, density: float | None, step: int) -> dict:
    """PSNR per held-out camera (whole frame over white, and masked to the union of silhouettes)."""
    out_rows, sheets = {}, {}
    for folder in sorted((scene / "heldout").iterdir()):
        if not (folder / "cameras.json").is_file():
            continue
        clip = read_clip(folder, num_motion, WHITE)
        full, masked, ious, shown = [], [], [], []
        for i in range(0, clip.num_frames, step):
            f = int(clip.motion_frames[i])
            posed = load_ply(job / "frames" / f"frame_{f:06d}.ply")
            cam = clip.cameras[i:i + 1]
            aa = antialias_for(cam, posed.means.mean(0), density)
            with torch.no_grad():
                out = render(posed, cam, settings=RenderSettings(background=WHITE, antialiased=aa))
            target = clip.frames[i]
            full.append(masked_psnr(out.rgb[0], target, torch.ones(target.shape[:2])))
            union = torch.maximum(out.alpha[0, ..., 0], clip.masks[i, ..., 0])
            masked.append(masked_psnr(out.rgb[0], target, union))
            ious.append(silhouette_iou(out.alpha[0, ..., 0], clip.masks[i, ..., 0]))
            shown.append((target, out.rgb[0]))
        out_rows[folder.name] = {"psnr": float(np.mean(full)), "masked_psnr": float(np.mean(masked)),
                                 "iou": float(np.mean(ious)), "frames": len(full),
                                 "psnr_per_frame": [round(float(v), 3) for v in full]}
        sheets[folder.name] = shown
    return {"cameras": out_rows, "sheets": sheets}


def restored_stand_in(videos: Path, out: Path, seed: int = 0) -> Path:
    """A stand-in for restored videos: the ground-truth trajectories as a video prior would hand them back —
    slightly blurred (σ 0.8 px), a per-frame colour drift (±4 % gain per channel), sensor-like noise (σ 2/255),
    alpha kept. Written in the same capture layout."""
    from PIL import Image, ImageFilter

    if (out / ".complete").is_file():
        return out
    rng = np.random.default_rng(seed)
    for clip in sorted(p for p in videos.iterdir() if (p / "cameras.json").is_file()):
        target = out / clip.name
        target.mkdir(parents=True, exist_ok=True)
        (target / "cameras.json").write_text((clip / "cameras.json").read_text())
        for frame in sorted(clip.glob("[0-9]*.png")):
            image = Image.open(frame).convert("RGBA")
            alpha = np.asarray(image)[..., 3:]
            rgb = np.asarray(image.convert("RGB").filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32) / 255
            rgb = rgb * (1 + rng.uniform(-0.04, 0.04, size=3)) + rng.normal(0, 2 / 255, size=rgb.shape)
            pixels = np.concatenate([(rgb.clip(0, 1) * 255 + 0.5).astype(np.uint8), alpha], -1)
            Image.fromarray(pixels, "RGBA").save(target / frame.name)
    (out / ".complete").write_text("")
    return out


def summary(rows: dict) -> dict:
    cams = rows["cameras"].values()
    return {"psnr": float(np.mean([c["psnr"] for c in cams])),
            "masked_psnr": float(np.mean([c["masked_psnr"] for c in cams])),
            "iou": float(np.mean([c["iou"] for c in cams]))}


def contact_sheet(results: dict, path: Path, frames: int = 6) -> None:
    """Rows: per held-out camera, ground truth / rigid / fitted(s); columns: frames."""
    from PIL import Image

    names = list(results)
    rows = []
    for cam in results[names[0]]["sheets"]:
        seq = results[names[0]]["sheets"][cam]
        picks = np.linspace(0, len(seq) - 1, min(frames, len(seq))).round().astype(int)
        rows.append(torch.cat([seq[k][0] for k in picks], dim=1))
        for name in names:
            s = results[name]["sheets"][cam]
            rows.append(torch.cat([s[k][1] for k in picks], dim=1))
    image = torch.cat(rows, dim=0).clamp(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image.numpy() * 255 + 0.5).astype(np.uint8)).save(path)


VARIANTS = {
    # name: (dynamics, garment override)
    "cloth": ("cloth", {}),
    "none": ("none", {}),
    "no-garment": ("none", {"type": "none"}),
}


def hem_radii_vs_blender(job: Path, scene: Path, motion) -> dict | None:
    """Hem radius per frame of the job's cloth layer against Blender's (both about the pelvis's vertical axis)."""
    from backend.body import load_body_model
    from backend.motion.cloth import ClothLayer
    from backend.stages.posing import pose_body

    if not (job / "cloth.npz").is_file() or not (scene / "cloth_stats.json").is_file():
        return None
    layer = ClothLayer.load(job / "cloth.npz")
    segments = json.loads((job / "result.json").read_text())["subject"]["garment"]["surface"]["segments"]
    body = load_body_model("default")
    posed = pose_body(motion, body)
    pelvis = posed.joints[:, body.joint_names.index("Pelvis")].float()
    hem = layer.vertices[:, -segments:]
    ours = (hem[..., :2] - pelvis[:, None, :2]).norm(dim=-1).mean(dim=1)
    stats = json.loads((scene / "cloth_stats.json").read_text())
    theirs = torch.tensor([f["hem_radius"] for f in stats["frames"]])
    n = min(len(ours), len(theirs))
    return {"ours": [round(float(v), 4) for v in ours[:n]], "blender": [round(float(v), 4) for v in theirs[:n]],
            "ours_first_max": [float(ours[0]), float(ours[:n].max())],
            "blender_first_max": [float(theirs[0]), float(theirs[:n].max())],
            "mean_abs_difference": float((ours[:n] - theirs[:n]).abs().mean())}


def surface_distance_to_blender(job: Path, scene: Path, samples: int = 4000) -> dict | None:
    """Symmetric mean surface distance (mm) per frame between the job's garment mesh and Blender's skirt (area-
    uniform samples on both): how close the garment's geometry is, apart from its texture."""
    from backend.motion.cloth import ClothLayer

    if not (job / "cloth.npz").is_file() or not (scene / "skirt_frames.npz").is_file():
        return None
    layer = ClothLayer.load(job / "cloth.npz")
    with np.load(scene / "skirt_frames.npz") as data:
        theirs, their_faces = torch.from_numpy(data["vertices"]).float(), torch.from_numpy(data["faces"]).long()

    def sample(v: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
        tri = torch.multinomial(torch.linalg.cross(b - a, c - a).norm(dim=-1), samples, replacement=True, generator=g)
        u = torch.rand(samples, 2, generator=g)
        su = u[:, 0].sqrt()
        return (1 - su)[:, None] * a[tri] + (su * (1 - u[:, 1]))[:, None] * b[tri] + (su * u[:, 1])[:, None] * c[tri]

    per_frame = []
    for f in range(min(layer.num_frames, theirs.shape[0])):
        d = torch.cdist(sample(layer.vertices[f], layer.binding.faces), sample(theirs[f], their_faces))
        per_frame.append(500.0 * float(d.min(1).values.mean() + d.min(0).values.mean()))
    return {"mean_mm": float(np.mean(per_frame)), "first_mm": per_frame[0],
            "per_frame_mm": [round(v, 2) for v in per_frame]}


def run(args: argparse.Namespace) -> dict:
    scene = Path(args.scene)
    work = Path(args.work or f"out/bench_cloth/{scene.name}-{args.quality}")
    work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    motion = load_motion(scene / "motion.npz")
    result: dict = {"scene": str(scene), "quality": args.quality, "animate_seconds": {}, "photo": {}, "gaussians": {},
                    "hem_radius": {}, "dynamics": {}, "surface_distance": {}}
    evaluations, jobs, density = {}, {}, None
    for variant in args.variants:
        dynamics, garment = VARIANTS[variant]
        job = jobs[variant] = work / f"job_{variant}"
        started = time.perf_counter()
        if not (job / "result.json").is_file():
            spec = JobSpec(motion=motion, image=str((scene / "photo.png").resolve()),
                           camera=json.loads((scene / "photo_camera.json").read_text()),
                           reference_frame=int(json.loads((scene / "photo.json").read_text())["reference_frame"]),
                           quality=args.quality, gaussians=args.gaussians, seed=args.seed, dynamics=dynamics,
                           cloth_preset=args.cloth_preset, garment=garment)
            animate(spec, job)
            result["animate_seconds"][variant] = time.perf_counter() - started
        job_result = json.loads((job / "result.json").read_text())
        density = (job_result.get("subject") or {}).get("fit_pixels_per_metre")
        result["gaussians"][variant] = job_result["gaussians"]
        result["dynamics"][variant] = job_result.get("dynamics")
        result["photo"][variant] = photo_check(job, scene, density)
        result["hem_radius"][variant] = hem_radii_vs_blender(job, scene, motion)
        result["surface_distance"][variant] = surface_distance_to_blender(job, scene)
        evaluations[variant] = held_out(job, scene, motion.num_frames, density, args.step)
    source = scene / "videos"
    if args.videos == "stand-in":
        source = restored_stand_in(source, work / "videos_stand_in")
    result["videos"] = args.videos
    modes = {"both": ("off", "on"), "on": ("on",), "off": ("off",), "none": ()}[args.appearance]
    result["fits"] = {}
    if modes:
        result["video_frames"] = len(load_videos(source, motion.num_frames, WHITE))
    for variant in args.fit_variants or args.variants:
        for mode in modes:
            name = f"{variant} fitted" + ("" if mode == "off" else "+appearance")
            out = work / (name.replace("+", "_").replace(" ", "_") + ("" if args.videos == "truth" else "_stand_in"))
            t0 = time.perf_counter()
            if not (out / "result.json").is_file() or json.loads((out / "result.json").read_text()).get("fit") is None:
                fit_job_folder(jobs[variant], source, out, iterations=args.iterations, appearance=mode == "on")
            fit = json.loads((out / "result.json").read_text())["fit"]
            result["fits"][name] = {"seconds": time.perf_counter() - t0, "iterations": fit["iterations"],
                                    "appearance": fit.get("appearance", False), "cloth_layer": fit.get("cloth_layer")}
            evaluations[name] = held_out(out, scene, motion.num_frames, density, args.step)
    result["held_out"] = {name: {"mean": summary(rows), "cameras": rows["cameras"]}
                          for name, rows in evaluations.items()}
    if args.images:
        contact_sheet(evaluations, Path(args.images) / f"cloth_{scene.name}_{args.quality}_{args.videos}_heldout.png")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", default="out/cloth_scene/twirl", help="a folder written by scripts/cloth_scene.py")
    p.add_argument("--quality", default="preview", choices=("preview", "standard", "high"))
    p.add_argument("--gaussians", type=int, default=40_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=None, help="fit iterations (default: the fit's budget rule)")
    p.add_argument("--appearance", default="both", choices=("both", "on", "off", "none"))
    p.add_argument("--videos", default="truth", choices=("truth", "stand-in"),
                   help="fit to the ground-truth trajectories, or to a restored-video stand-in made from them")
    p.add_argument("--step", type=int, default=2, help="evaluate every n-th held-out frame")
    p.add_argument("--work", default=None, help="job folders go here (default out/bench_cloth/<scene>-<quality>)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--images", default=None, help="write a held-out contact sheet here")
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=["cloth", "none"],
                   help="jobs to animate: cloth (--dynamics cloth), none (garment skinned rigidly), no-garment "
                        "(--garment none: every Gaussian on the body, as before the cloth layer)")
    p.add_argument("--fit-variants", nargs="*", choices=tuple(VARIANTS), default=None,
                   help="which jobs `fit --videos` refits (default: all of --variants)")
    p.add_argument("--cloth-preset", default="medium")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"scene {result['scene']} ({result['videos']} videos), quality {result['quality']}: "
          f"Gaussians {result['gaussians']}, animate seconds {result['animate_seconds']}, "
          f"{result.get('video_frames', 0)} video frames")
    print("reconstruction vs the photo in its own view (masked over the union of silhouettes):")
    for variant, rows in result["photo"].items():
        for name, row in rows.items():
            print(f"  {variant:<10} {name:<5} {row['size']:>4}px  PSNR {row['psnr']:6.2f} dB  IoU {row['iou']:.3f}"
                  f"  {'antialiased' if row['antialiased'] else 'classic'}")
    for variant, hem in result["hem_radius"].items():
        if hem:
            print(f"hem radius ({variant}): ours first/max {hem['ours_first_max'][0]:.3f}/{hem['ours_first_max'][1]:.3f}"
                  f" m, Blender {hem['blender_first_max'][0]:.3f}/{hem['blender_first_max'][1]:.3f} m, mean |diff| "
                  f"{hem['mean_abs_difference']:.3f} m")
    for variant, dist in result["surface_distance"].items():
        if dist:
            print(f"garment surface vs Blender's skirt ({variant}): {dist['mean_mm']:.1f} mm mean over frames "
                  f"(frame 0: {dist['first_mm']:.1f} mm)")
    for variant, dyn in result["dynamics"].items():
        if dyn and dyn.get("mode") == "cloth":
            print(f"cloth ({variant}): {dyn['frames_per_second']} fps on {dyn['device']}, compile "
                  f"{dyn['seconds']['compile']:.1f} s, deepest contact {dyn['max_depth_in_colliders_mm']} mm")
    for name, fit in result["fits"].items():
        print(f"fit {name}: {fit['iterations']} iterations in {fit['seconds'] / 60:.1f} min")
    cams = list(next(iter(result["held_out"].values()))["cameras"])
    header = " ".join(f"{c:>16}" for c in cams)
    print(f"held-out PSNR (dB), whole frame / masked:  {header} {'mean':>16}  IoU")
    for name, rows in result["held_out"].items():
        cells = " ".join(f"{rows['cameras'][c]['psnr']:7.2f} / {rows['cameras'][c]['masked_psnr']:6.2f}"
                         for c in cams)
        m = rows["mean"]
        print(f"  {name:<38} {cells} {m['psnr']:7.2f} / {m['masked_psnr']:6.2f}  {m['iou']:.3f}")


if __name__ == "__main__":
    main()
