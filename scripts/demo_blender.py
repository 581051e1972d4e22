#!/usr/bin/env python3
"""The headless Blender user journey, run with the Blender environment's Python:

    .venv-blender/bin/python scripts/demo_blender.py [--out out/demo/blender] [--motion out/demo/motions/walk.npz]

1. starts a local backend (``.venv/bin/python -m backend serve``) unless ``--endpoint`` names a running one,
2. builds a scene with the body rig received over the wire ("Add Body") and keys a built-in motion on it
   (the backend demo's ``motions/walk.npz`` when present, else a procedural walk keyed in Blender),
3. presses Animate (the same functions the operator and its timer call), printing progress,
4. imports the result as an animated point cloud, bakes Alembic (+ USD with every attribute),
5. renders a preview image with Cycles and saves the .blend — all under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "out" / "demo" / "blender"))
    p.add_argument("--backend-python", default=str(REPO / ".venv" / "bin" / "python"))
    p.add_argument("--endpoint", default=None, help="use a backend already running there (default: start one)")
    p.add_argument("--motion", default=str(REPO / "out" / "demo" / "motions" / "walk.npz"),
                   help="motion npz keyed on the rig (default: the backend demo's walk; procedural if missing)")
    p.add_argument("--frames", type=int, default=24, help="frames to animate (default 24)")
    p.add_argument("--gaussians", type=int, default=20000)
    p.add_argument("--quality", default="preview", choices=("preview", "standard", "high"))
    p.add_argument("--prior", default="none")
    p.add_argument("--image", default="", help="reference photo (default: the backend's default subject); a "
                   "reference camera framed like the preview (front-side view of the body) is added for it")
    p.add_argument("--reference-frame", type=int, default=None,
                   help="scene frame whose pose matches --image (default: the middle frame, like the preview)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=384, help="preview render size in pixels")
    p.add_argument("--samples", type=int, default=16, help="Cycles samples of the preview")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the job")
    return p.parse_args(argv)


def procedural_walk(rest_vertices, rest_joints, frames: int) -> dict:
    """A motion (SMPL-X parameters, world Z up): two strides towards -Y (the body's front) with swinging legs,
    arms down at the sides, standing on z = 0. Rest arrays are in the body frame (Y up, +X = the body's left).
    """
    import numpy as np

    from blender_addon import convert, rig_export

    t = np.arange(frames) / max(frames, 1)
    swing = 0.45 * np.sin(2 * np.pi * 2 * t)
    pose = np.zeros((frames, 21, 3))
    index = {name: i - 1 for i, name in enumerate(rig_export.BODY_JOINTS)}
    pose[:, index["left_hip"], 0] = -swing  # negative about +X swings the leg forward
    pose[:, index["right_hip"], 0] = swing
    pose[:, index["left_knee"], 0] = 1.1 * np.maximum(swing, 0.0)  # bend the trailing knee
    pose[:, index["right_knee"], 0] = 1.1 * np.maximum(-swing, 0.0)
    pose[:, index["left_shoulder"], 2] = -1.2  # arms from the T-pose down to the sides
    pose[:, index["right_shoulder"], 2] = 1.2
    pose[:, index["left_elbow"], 1] = 0.3 * swing
    pose[:, index["right_elbow"], 1] = 0.3 * swing
    root = np.tile(convert.matrix_to_axis_angle(convert.Y_UP_TO_Z_UP), (frames, 1))
    pelvis = np.asarray(rest_joints)[0]
    pelvis_height = pelvis[1] - np.asarray(rest_vertices)[:, 1].min()
    trans = np.stack([np.zeros(frames), -1.4 * t, np.full(frames, pelvis_height)], axis=1) - pelvis
    return {"root_orient": root, "pose_body": pose.reshape(frames, 63), "trans": trans, "betas": np.zeros(10),
            "mocap_frame_rate": np.asarray(24.0)}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="ani3dhuman-demo-blender-"))
    for var in ("BLENDER_USER_RESOURCES",):
        os.environ.setdefault(var, str(scratch / "blender"))
    sys.path.insert(0, str(REPO))

    import bpy
    import numpy as np

    import blender_addon
    from blender_addon import bake, body_rig, preferences, rig_export, session

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_addon.register()
    scene = bpy.context.scene
    props = scene.ani3dhuman
    prefs = preferences.Prefs(python_path=args.backend_python, backend_dir=str(REPO),
                              jobs_dir=str(out / "jobs"), results_dir=str(out / "results"))
    started_backend = args.endpoint is None
    props.endpoint = args.endpoint or _free_endpoint()
    try:
        if started_backend:
            print(f"[demo-blender] starting backend at {props.endpoint} ({args.backend_python})", flush=True)
            session.start_backend(prefs, props.endpoint)
        info = session.wait_for_backend(props, timeout_s=180)
        timings["backend_ready_s"] = time.perf_counter() - t0
        print(f"[demo-blender] backend: {props.connection_status}; devices {info.get('devices')}", flush=True)

        # Scene: the body rig over the wire + a built-in motion.
        t = time.perf_counter()
        motion = None
        if args.motion and Path(args.motion).is_file():
            motion = {k: np.asarray(v) for k, v in np.load(args.motion).items()}
        betas = motion["betas"] if motion is not None and "betas" in motion else None
        reply = session.get_client(props.endpoint).body_model("default", betas=betas, timeout_s=120)
        arm, body_mesh = body_rig.build_body_rig(bpy.context, reply.arrays, reply.header, betas=betas)
        props.armature = arm
        if motion is not None:
            frames = min(args.frames, len(motion["root_orient"]))
            clipped = {k: (v[:frames] if k in ("root_orient", "pose_body", "pose_hand", "trans") else v)
                       for k, v in motion.items()}
            rig_export.apply_motion(scene, arm, clipped, frame_start=1)
            motion_source = str(args.motion)
        else:
            frames = args.frames
            walk = procedural_walk(reply.arrays["rest_vertices"], reply.arrays["rest_joints"], frames)
            rig_export.apply_motion(scene, arm, walk, frame_start=1)
            motion_source = "procedural walk (add-on demo)"
        scene.frame_start, scene.frame_end = 1, frames
        scene.render.fps = 24
        timings["scene_s"] = time.perf_counter() - t
        print(f"[demo-blender] rig '{arm.name}' ({len(body_mesh.data.vertices)} vertices), motion: "
              f"{motion_source}, {frames} frames", flush=True)

        # Animate: the operator's steps (submit, then the timer's polling function until imported).
        props.gaussians, props.quality, props.prior, props.seed = args.gaussians, args.quality, args.prior, args.seed
        props.reference_image = args.image
        mid = 1 + frames // 2
        if args.image:
            import bpy as _bpy

            photo = _bpy.data.images.load(str(Path(args.image).resolve()))
            width, height = photo.size
            scene.render.resolution_x, scene.render.resolution_y = width, height
            scene.render.resolution_percentage = 100
            props.reference_frame = args.reference_frame or mid
            props.reference_camera = framing_camera(scene, body_mesh, props.reference_frame, "Reference Camera")
            print(f"[demo-blender] reference photo {args.image} ({width}x{height}), frame {props.reference_frame}",
                  flush=True)
        t = time.perf_counter()
        job = session.start_job(bpy.context, props, Path(prefs.results_dir))
        print(f"[demo-blender] job {job.id} submitted", flush=True)
        last = [None]

        def show(j):
            line = f"{props.job_state:>10} {props.stage:<14} {props.progress * 100:5.1f}%  {props.message[:70]}"
            if line != last[0]:
                print(f"[demo-blender] {line}", flush=True)
                last[0] = line

        job = session.run_until_done(bpy.context, timeout_s=args.timeout, on_step=show)
        timings["animate_s"] = time.perf_counter() - t
        if job.state != "imported":
            print(f"[demo-blender] job ended {job.state}: {job.error}", file=sys.stderr)
            return 1
        splats = bpy.data.objects[job.object_name]
        print(f"[demo-blender] imported '{splats.name}' ({len(splats.data.points)} points) from {job.result_dir}",
              flush=True)

        # Bakes.
        t = time.perf_counter()
        abc = bake.bake_alembic(bpy.context, splats, out / "splats.abc")
        timings["alembic_s"] = time.perf_counter() - t
        t = time.perf_counter()
        usd = bake.export_usd(bpy.context, splats, out / "splats.usdc")
        timings["usd_s"] = time.perf_counter() - t
        print(f"[demo-blender] baked {abc} ({abc.stat().st_size / 1e6:.1f} MB), {usd}", flush=True)

        # Preview render (Cycles, CPU): the splats at the middle frame, body mesh and rig hidden.
        t = time.perf_counter()
        preview = render_preview(scene, body_mesh, [body_mesh, arm], out / "preview.png", mid,
                                 args.resolution, args.samples)
        timings["render_s"] = time.perf_counter() - t
        print(f"[demo-blender] preview {preview}", flush=True)

        blend = out / "scene.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))
        summary = {"job": job.id, "frames": frames, "points": len(splats.data.points), "motion": motion_source,
                   "result_dir": str(job.result_dir), "alembic": str(abc), "usd": str(usd),
                   "preview": str(preview), "blend": str(blend),
                   "timings_s": {k: round(v, 2) for k, v in timings.items()}}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"[demo-blender] done: {json.dumps(summary['timings_s'])}", flush=True)
        return 0
    except (session.SessionError, rig_export.RigError, body_rig.BodyError, bake.BakeError, OSError) as exc:
        print(f"[demo-blender] error: {exc}", file=sys.stderr)
        return 1
    finally:
        if started_backend:
            session.stop_backend()
        blender_addon.unregister()


def framing_camera(scene, body_mesh, frame: int, name: str):
    """A camera seeing the body (its skinned mesh at ``frame``) from the front-left, a little from above."""
    import bpy
    import numpy as np

    scene.frame_set(frame)
    evaluated = body_mesh.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    world = np.asarray(evaluated.matrix_world)
    pos = co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
    centre = (pos.min(axis=0) + pos.max(axis=0)) / 2
    height = float(pos[:, 2].max() - pos[:, 2].min())
    data = bpy.data.cameras.new(name)
    data.lens = 50.0
    cam = bpy.data.objects.new(name, data)
    scene.collection.objects.link(cam)
    distance = max(height, 0.5) * 2.2
    # The body faces -Y: look at it from the front, a little from the side and above.
    cam.location = centre + np.array([0.35 * distance, -distance, 0.15 * distance])
    cam.rotation_euler = direction_to_euler(centre - np.asarray(cam.location))
    bpy.context.view_layer.update()
    return cam


def render_preview(scene, body_mesh, hide, path: Path, frame: int, resolution: int, samples: int) -> Path:
    """Cycles render of the splats at ``frame`` (body mesh and rig hidden) from the framing camera."""
    import bpy

    cam = framing_camera(scene, body_mesh, frame, "Preview Camera")
    for obj in hide:
        obj.hide_render = True
    scene.camera = cam
    world = bpy.data.worlds.new("Preview World")
    world.color = (0.05, 0.05, 0.06)
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"  # show the Gaussians' colours as they are (no AgX look)
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return path


def direction_to_euler(direction):
    """Euler rotation pointing a camera (looking down its -Z, +Y up) along ``direction`` with Z up."""
    from mathutils import Vector

    return Vector(direction).to_track_quat("-Z", "Y").to_euler()


if __name__ == "__main__":
    sys.exit(main())
