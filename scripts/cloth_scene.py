#!/usr/bin/env python3
"""An independent ground-truth scene: the embedded body in a flared skirt simulated by Blender's cloth solver
and rendered with Cycles — a reference photo, 5 diagonal view–time trajectories and 3 held-out cameras — to
measure ``ani3dhuman animate --image`` / ``ani3dhuman fit --videos`` against truth no backend code made.

    .venv/bin/python scripts/cloth_scene.py --out out/cloth_scene/twirl [--motion twirl|walk] [--frames 48]
        [--size 256] [--photo-size 512] [--samples 32] [--warmup 24] [--heldout-every 1]
        [--blender .venv-blender-5.3/bin/python]

This half (backend venv) poses the body and makes the cameras with the backend's own functions; the Blender
half (``scripts/cloth_scene_blender.py``, run here as a subprocess) builds the cloth scene, bakes, measures
and renders. Motion frame f is Blender frame ``warmup + 1 + f`` (frames 1..warmup are the cloth's warm-up).

Cameras (camera JSON of docs/design.md §3, Blender convention):
- photo: ``reconstruct.synthetic.photo_cameras(center, [0°])`` with ``center`` = the frame-0 body's vertex
  bounding-box centre (front view from −Y, 36° lens, 3.2 m), at motion frame 0;
- trajectories: as ``stages/prior_rounds.py``: ``frame_subject`` on the posed body vertices (every
  ``max(1, F//16)``-th frame), ``diagonal_trajectory`` from ``trajectory_azimuths(5)`` (0°, 137.5°, 275°,
  52.5°, 190°; 60° span, 10° elevation, 40° FoV), ``num_frames = F``, size × size; trajectory frame i shows
  motion frame ``traj.frame_indices(F)[i]``;
- held-out: ``cameras_around`` with the same framing at 95°, 232°, 318° (the gaps no trajectory sweeps),
  elevation 8°, every ``--heldout-every``-th motion frame.

Output layout (``<out>``):
    motion.npz                      the motion (``Motion.save``, AMASS SMPL-X contract)
    photo.png  photo_camera.json  photo.json ({"reference_frame": 0})
    videos/trajectory_XX/0000.png ... + cameras.json  {"frames": [{camera..., "frame": f}, ...],
                                                       "num_motion_frames": F}   ("capture layout")
    heldout/cam_XX/0000.png ...       + cameras.json  (same layout)
    cloth_stats.json  skirt_frames.npz  scene.blend  contact_sheet.png  timings.json
    blender_inputs.npz  blender_inputs.json   (what the Blender half read)  blender_log.txt  blender_stderr.txt
All PNGs are RGBA 8-bit with a transparent background.

Measured on 2 CPU cores (bpy 5.3, Cycles CPU, 32 spp + OIDN, warm-up 24, 48 frames, 256² videos, 512² photo):
posing 0.4 s, cameras 0.1 s, scene build 0.2 s, Surface Deform bind 0.1 s, cloth bake 7-8 s, measurements
2 s, 385 renders (1 photo + 5×48 trajectory + 3×48 held-out frames) at 1.9-2.0 s each = 12-13 min;
twirl 13.1 min, walk 12.3 min in all. The tiny check (``--frames 8 --size 64 --samples 4 --warmup 6``)
takes ~30 s. ``<out>/timings.json`` has a run's own numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HELDOUT_AZIMUTHS = (95.0, 232.0, 318.0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "out" / "cloth_scene"))
    p.add_argument("--motion", default="twirl", choices=("twirl", "walk"))
    p.add_argument("--frames", type=int, default=48, help="motion frames (default 48)")
    p.add_argument("--fps", type=float, default=24.0, help="motion frame rate (the builtin's default 24)")
    p.add_argument("--size", type=int, default=256, help="trajectory / held-out image size (square)")
    p.add_argument("--photo-size", type=int, default=512)
    p.add_argument("--samples", type=int, default=32, help="Cycles samples per pixel")
    p.add_argument("--warmup", type=int, default=24, help="Blender frames before motion frame 0 (cloth settles)")
    p.add_argument("--trajectories", type=int, default=5)
    p.add_argument("--heldout-azimuths", default=",".join(f"{a:g}" for a in HELDOUT_AZIMUTHS))
    p.add_argument("--heldout-elevation", type=float, default=8.0)
    p.add_argument("--heldout-every", type=int, default=1, help="render the held-out cameras every n-th frame")
    p.add_argument("--segments", type=int, default=48, help="skirt vertices around")
    p.add_argument("--rings", type=int, default=20, help="skirt vertex rows (waist to hem)")
    p.add_argument("--flare", type=float, default=1.75, help="hem radius / mean waist radius")
    p.add_argument("--quality", type=int, default=8, help="cloth solver steps per frame")
    p.add_argument("--bending", type=float, default=0.5, help="cloth bending stiffness (Cotton: 0.5)")
    p.add_argument("--no-render", action="store_true", help="simulate and measure only (no images)")
    p.add_argument("--threads", type=int, default=0, help="Cycles threads (0 = all)")
    p.add_argument("--blender", default=str(REPO / ".venv-blender-5.3" / "bin" / "python"))
    return p.parse_args(argv)



def with_frames(dicts: list[dict], frames: list[int]) -> list[dict]:
    return [{**d, "frame": int(f)} for d, f in zip(dicts, frames, strict=True)]


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def contact_sheet(out: Path, streams: list[dict], columns: int = 6) -> Path | None:
    """Rows: every trajectory and held-out camera; columns: evenly spaced frames; RGBA over a grey checker."""
    from PIL import Image

    rows = []
    for stream in streams:
        n = len(stream["frames"])
        picks = sorted({round(i * (n - 1) / max(columns - 1, 1)) for i in range(columns)})
        tiles = []
        for i in picks:
            path = out / stream["folder"] / f"{i:04d}.png"
            if path.is_file():
                tiles.append(Image.open(path).convert("RGBA"))
        if tiles:
            rows.append(tiles)
    if not rows:
        return None
    w, h = rows[0][0].size
    sheet = Image.new("RGBA", (w * columns, h * len(rows)), (0, 0, 0, 0))
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 0, 150, 115).astype(np.uint8).repeat(3, axis=2)
    bg = Image.fromarray(np.concatenate([board, np.full((h, w, 1), 255, np.uint8)], axis=2), "RGBA")
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet.paste(Image.alpha_composite(bg, tile), (c * w, r * h))
    path = out / "contact_sheet.png"
    sheet.save(path)
    return path


def main(argv=None) -> None:
    args = parse_args(argv)
    from backend.core.progress import StageTimer
    from backend.body import load_body_model
    from backend.body.parts import PART_NAMES, part_ids_from_weights
    from backend.motion import Motion
    from backend.motion.builtin import builtin_motion
    from backend.reconstruct.synthetic import photo_cameras
    from backend.render.trajectories import cameras_around, diagonal_trajectory, frame_subject
    from backend.stages.posing import pose_body
    from backend.stages.prior_rounds import trajectory_azimuths

    if args.warmup < 3:
        raise SystemExit("--warmup must be at least 3 frames")
    t_all = time.perf_counter()
    timer = StageTimer()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    F = args.frames

    with timer.stage("pose body"):
        body = load_body_model("default")
        motion = builtin_motion(args.motion, body, frames=F, fps=args.fps)
        motion.save(out / "motion.npz")
        posed = pose_body(motion, body)
        # Warm-up pose: the frame-0 root orientation and translation, every body joint at zero (legs straight).
        warm = Motion(motion.root_orient[:1], np.zeros_like(motion.pose_body[:1]), motion.trans[:1], motion.betas,
                      motion.fps)
        rest = pose_body(warm, body)
        part_ids = part_ids_from_weights(body.skin_weights, body.joint_names).cpu().numpy()
        vertices = posed.vertices.cpu().float()
        np.savez(out / "blender_inputs.npz",
                 vertices=vertices.numpy().astype(np.float32),
                 faces=body.faces.cpu().numpy().astype(np.int32),
                 joints=posed.joints.cpu().numpy().astype(np.float32),
                 rest_vertices=rest.vertices[0].cpu().numpy().astype(np.float32),
                 rest_joints=rest.joints[0].cpu().numpy().astype(np.float32),
                 joint_names=np.array(body.joint_names), part_ids=part_ids.astype(np.int32),
                 part_names=np.array(PART_NAMES),
                 pelvis_transforms=posed.joint_transforms[:, 0].cpu().numpy().astype(np.float32))

    with timer.stage("cameras"):
        v0 = vertices[0]
        center = (v0.min(0).values + v0.max(0).values) / 2
        photo = photo_cameras(center, [0.0], width=args.photo_size, height=args.photo_size)
        photo_dict = photo.to_dicts()[0]
        write_json(out / "photo_camera.json", photo_dict)
        write_json(out / "photo.json", {"reference_frame": 0})
        framing = frame_subject(vertices[:: max(1, F // 16)], width=args.size, height=args.size)
        streams = []
        for k, az in enumerate(trajectory_azimuths(args.trajectories)):
            traj = diagonal_trajectory(framing, start_azimuth_deg=az, num_frames=F, width=args.size,
                                       height=args.size)
            frames = traj.frame_indices(F).tolist()
            streams.append({"folder": f"videos/trajectory_{k:02d}", "start_azimuth_deg": az,
                            "frames": with_frames(traj.cameras.to_dicts(), frames)})
        azimuths = [float(a) for a in args.heldout_azimuths.split(",") if a.strip()]
        held = cameras_around(framing, torch.tensor(azimuths), elevation_deg=args.heldout_elevation,
                              width=args.size, height=args.size).to_dicts()
        shown = list(range(0, F, max(1, args.heldout_every)))
        for k, cam in enumerate(held):
            streams.append({"folder": f"heldout/cam_{k:02d}", "azimuth_deg": azimuths[k],
                            "frames": with_frames([cam] * len(shown), shown)})
        for s in streams:
            write_json(out / s["folder"] / "cameras.json", {"frames": s["frames"], "num_motion_frames": F})
        inputs = {
            "npz": str(out / "blender_inputs.npz"), "fps": float(motion.fps), "num_motion_frames": F,
            "warmup": args.warmup, "samples": args.samples, "threads": args.threads, "render": not args.no_render,
            "photo": {"camera": photo_dict, "frame": 0},
            "streams": streams,
            "framing": {"center": framing.center.tolist(), "distance": framing.distance},
            "skirt": {"segments": args.segments, "rings": args.rings, "flare": args.flare,
                      "waist_above_pelvis": 0.07, "hem_above_knee": 0.07, "waist_clearance": 0.01,
                      "body_clearance": 0.02, "checks_around": 12, "quality": args.quality, "bending": args.bending,
                      "collision_quality": 2, "render_subdivisions": 2},
        }
        write_json(out / "blender_inputs.json", inputs)

    with timer.stage("blender"), tempfile.TemporaryDirectory(prefix="cloth_scene_bpy_") as home:
        env = dict(os.environ, HOME=home, XDG_CACHE_HOME=os.path.join(home, "cache"),
                   BLENDER_USER_RESOURCES=os.path.join(home, "resources"))
        cmd = [args.blender, str(REPO / "scripts" / "cloth_scene_blender.py"), str(out / "blender_inputs.json"),
               str(out)]
        print("[cloth_scene] running", " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        stderr_lines: list[str] = []
        reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
        reader.start()
        with open(out / "blender_log.txt", "w") as log:
            for line in proc.stdout:
                log.write(line)
                if line.startswith("[blender]") or "rror" in line:
                    print(line, end="", flush=True)
        rc = proc.wait()
        reader.join()
        (out / "blender_stderr.txt").write_text("".join(stderr_lines))
        if rc != 0:
            sys.stderr.write("".join(stderr_lines[-200:]))
            raise SystemExit(f"Blender half failed with exit code {rc} (stderr above)")

    with timer.stage("contact sheet"):
        sheet = contact_sheet(out, streams)
    timings = {"stages": timer.timings, "total": time.perf_counter() - t_all}
    blender_t = out / "blender_timings.json"
    if blender_t.is_file():
        timings["blender"] = json.loads(blender_t.read_text())
    write_json(out / "timings.json", timings)
    stats = json.loads((out / "cloth_stats.json").read_text())
    print(f"[cloth_scene] wrote {out} in {timings['total']:.0f} s; hem radius max {stats['max_hem_radius']:.3f} m "
          f"(frame {stats['max_hem_radius_frame']}), mean waist radius {stats['mean_waist_radius']:.3f} m, "
          f"waist ring {1000 * stats['waist_gap_range'][0]:.0f}..{1000 * stats['waist_gap_range'][1]:.0f} mm off "
          f"the body and within {1000 * stats['max_waist_pelvis_dev']:.0f} mm of its start in the pelvis frame, "
          f"at most {stats['max_inside_body']} skirt vertices inside the body; contact sheet {sheet}", flush=True)


if __name__ == "__main__":
    main()
