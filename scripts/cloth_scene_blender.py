#!/usr/bin/env python3
"""Blender half of the independent cloth test scene (run by ``scripts/cloth_scene.py``; needs ``bpy``):

    .venv-blender-5.3/bin/python scripts/cloth_scene_blender.py <out>/blender_inputs.json <out>

What it builds (Cycles CPU, Blender's own cloth solver; nothing of the backend runs here):

- **Body**: one mesh from the backend's posed body (``blender_inputs.npz``: ``rest_vertices``, ``vertices
  [F,V,3]``, ``faces``), animated with shape keys: the basis is the *warm-up pose* (the motion's frame-0 root
  orientation and translation with every body joint at zero), key ``F%04d`` is motion frame f, keyed 1 on its
  Blender frame and 0 on its neighbours (LINEAR). A Collision modifier (outer thickness 5 mm, friction 2).
  Material slots from the backend's body-part labels: skin (head, arms, hands), shirt (torso), leggings
  (legs), shoes (feet).
- **Frame mapping**: Blender frame 1 .. ``warmup`` is the warm-up: the body holds the warm-up pose until frame
  ``1 + warmup//3``, blends linearly into motion frame 0 by frame ``1 + 2*warmup//3`` and holds it; the cloth
  settles meanwhile. **Motion frame f is Blender frame ``warmup + 1 + f``** (scene range 1 .. warmup + F, fps
  = the motion's fps).
- **Skirt**: a flared tube (``segments`` around × ``rings`` rows) from the waist (pelvis joint + 7 cm, the
  body's cross-section there + 1 cm, per angle) down to 7 cm above the knees, hem radius ``flare`` × the mean
  waist radius, pushed out to clear the hips and thighs of the warm-up pose by 2 cm. The waist ring is the
  cloth pin group (``cloth.settings.vertex_group_mass``); a Surface Deform modifier (target: the body,
  restricted to the pin group, bound at frame 1) *before* the Cloth modifier makes the pinned ring follow the
  body. Cloth: Blender's Cotton preset (vertex mass 0.3, tension/compression/shear 15, bending 0.5, air
  damping 1), quality 8, collision distance 5 mm, no self-collision; baked into the .blend's memory cache.
  A Subdivision Surface modifier (render level 2, off in the viewport) after the Cloth smooths the render only.
  Material: red/white Checker Texture on the skirt's UVs (12 checks around, square-ish down), two-sided.
- **Light**: world grey-white 0.8 at strength 1 + a sun from the front-left above; film transparent (RGBA).
- **Cameras**: each camera JSON (docs/design.md §3) becomes a Blender camera: ``matrix_world =
  world_from_camera``, ``sensor_fit = 'VERTICAL'``, ``lens = fy * sensor_height / height``, ``shift_x = (W/2 −
  cx) / H``, ``shift_y = (cy − H/2) / H`` (Blender's shift is in units of the fitted sensor side, here the
  height; checked against ``bpy_extras.object_utils.world_to_camera_view`` to 1e-4 px for off-centre principal
  points and non-square images); square pixels only (``fx == fy``, else ValueError).

Outputs under ``<out>`` (the camera JSON files are written by ``cloth_scene.py``):
``photo.png``; ``videos/trajectory_XX/0000.png ...``; ``heldout/cam_XX/0000.png ...`` (RGBA 8-bit);
``cloth_stats.json`` (per motion frame: hem radius and waist radius about the pelvis joint's vertical axis,
hem height, the waist ring's signed distance to the body surface, how far the waist ring moved in the pelvis
joint's frame since the start — a few cm from the spine twist, a quarter metre had it not followed the twirl —
and the skirt vertices more than 2 mm inside the body); ``skirt_frames.npz`` (``vertices [F,Vs,3]`` world,
``faces [Q,4]``, ``waist_ring``, ``hem_ring`` indices, ``motion_frames``; the simulated mesh before
subdivision); ``scene.blend`` (baked cloth cache inside); ``blender_timings.json``.

Measured (2 CPU cores, bpy 5.3): see ``cloth_scene.py``'s docstring.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix
from mathutils.bvhtree import BVHTree

SENSOR_HEIGHT_MM = 24.0

# Linear-space base colours (Principled BSDF).
SKIN = (0.745, 0.413, 0.262)
SHIRT = (0.021, 0.188, 0.305)
LEGGINGS = (0.035, 0.035, 0.055)
SHOES = (0.045, 0.022, 0.010)
CHECK_A = (0.60, 0.02, 0.02)
CHECK_B = (0.85, 0.85, 0.85)
PART_MATERIAL = {"head": 0, "left_arm": 0, "right_arm": 0, "left_hand": 0, "right_hand": 0, "torso": 1,
                 "left_leg": 2, "right_leg": 2, "left_foot": 3, "right_foot": 3,
                 "garment": 2}  # no body vertex is labelled garment; listed so the table covers every part


class Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def stage(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()
                print(f"[blender] {name} ...", flush=True)

            def __exit__(self, *exc):
                dt = time.perf_counter() - self.t0
                timer.times[name] = timer.times.get(name, 0.0) + dt
                print(f"[blender] {name}: {dt:.1f} s", flush=True)

        return _Stage()


# ---- scene setup --------------------------------------------------------------------------------------------
def reset_scene(fps: float, threads: int) -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.save_version = 0  # no scene.blend1 backups
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.use_motion_blur = False
    if threads > 0:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = threads
    fps_int = int(round(fps))
    scene.render.fps = fps_int
    scene.render.fps_base = fps_int / fps
    return scene


def set_cycles(scene: bpy.types.Scene, samples: int) -> None:
    c = scene.cycles
    c.samples = samples
    c.use_adaptive_sampling = True
    c.max_bounces = 4
    c.diffuse_bounces = 2
    c.glossy_bounces = 2
    c.transmission_bounces = 2
    c.transparent_max_bounces = 4
    try:
        c.use_denoising = True
        c.denoiser = "OPENIMAGEDENOISE"
    except (AttributeError, TypeError) as exc:
        print(f"[blender] denoising unavailable: {exc}")
        c.use_denoising = False


def principled(name: str, color) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    try:
        mat.use_nodes = True
    except AttributeError:
        pass
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.65
    mat.diffuse_color = (*color, 1.0)
    return mat


def checker_material(checks_u: int, checks_v: int) -> bpy.types.Material:
    mat = principled("SkirtChecker", CHECK_B)
    mat.use_backface_culling = False
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    uv = nodes.new("ShaderNodeUVMap")
    uv.uv_map = "UVMap"
    mapping = nodes.new("ShaderNodeMapping")
    mapping.inputs["Scale"].default_value = (float(checks_u), float(checks_v), 1.0)
    checker = nodes.new("ShaderNodeTexChecker")
    checker.inputs["Scale"].default_value = 1.0  # one check per unit of the mapped UVs
    checker.inputs["Color1"].default_value = (*CHECK_A, 1.0)
    checker.inputs["Color2"].default_value = (*CHECK_B, 1.0)
    links.new(uv.outputs["UV"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], checker.inputs["Vector"])
    links.new(checker.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    return mat


def setup_world_and_light(scene: bpy.types.Scene) -> None:
    world = bpy.data.worlds.new("World")
    scene.world = world
    try:
        world.use_nodes = True
    except AttributeError:
        pass
    bg = world.node_tree.nodes.get("Background")
    bg.inputs["Color"].default_value = (0.8, 0.8, 0.8, 1.0)
    bg.inputs["Strength"].default_value = 1.0
    sun = bpy.data.lights.new("Sun", "SUN")
    sun.energy = 2.5
    sun.angle = math.radians(10.0)
    obj = bpy.data.objects.new("Sun", sun)
    obj.rotation_euler = (math.radians(50.0), 0.0, math.radians(-30.0))  # from the front (−Y), left, above
    scene.collection.objects.link(obj)


def mesh_object(name: str, verts: np.ndarray, faces: np.ndarray, scene: bpy.types.Scene) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.astype(np.float64).tolist(), [], faces.astype(np.int64).tolist())
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    return obj


# ---- body ---------------------------------------------------------------------------------------------------
def face_parts(faces: np.ndarray, part_ids: np.ndarray) -> np.ndarray:
    """Majority part of each triangle's vertices (first vertex on a three-way tie)."""
    p = part_ids[faces]
    return np.where((p[:, 1] == p[:, 2]) & (p[:, 0] != p[:, 1]), p[:, 1], p[:, 0])


def build_body(scene, data: dict, part_names: list[str], warmup: int) -> bpy.types.Object:
    rest, frames, faces = data["rest_vertices"], data["vertices"], data["faces"]
    body = mesh_object("Body", rest, faces, scene)
    mesh = body.data
    mesh.shade_smooth()
    for mat in (principled("Skin", SKIN), principled("Shirt", SHIRT), principled("Leggings", LEGGINGS),
                principled("Shoes", SHOES)):
        mesh.materials.append(mat)
    fp = face_parts(faces, data["part_ids"])
    lut = np.array([PART_MATERIAL[n] for n in part_names], dtype=np.int64)
    mesh.polygons.foreach_set("material_index", lut[fp].astype(np.int32))

    body.shape_key_add(name="WarmupPose", from_mix=False)
    keys = []
    for f in range(frames.shape[0]):
        kb = body.shape_key_add(name=f"F{f:04d}", from_mix=False)
        kb.data.foreach_set("co", frames[f].astype(np.float32).ravel())
        keys.append(kb)
    prefs = bpy.context.preferences.edit
    prefs.keyframe_new_interpolation_type = "LINEAR"
    hold_end, blend_end, start = 1 + warmup // 3, max(2 + warmup // 3, 1 + (2 * warmup) // 3), warmup + 1
    for f, kb in enumerate(keys):
        frame = start + f
        points = ([(hold_end, 0.0), (blend_end, 1.0)] if f == 0 else [(frame - 1, 0.0)])
        points += [(frame, 1.0), (frame + 1, 0.0)]
        for at, value in points:
            kb.value = value
            kb.keyframe_insert("value", frame=at)
    body.modifiers.new("Collision", "COLLISION")
    body.collision.thickness_outer = 0.005
    body.collision.thickness_inner = 0.01
    body.collision.cloth_friction = 2.0
    body.collision.damping = 0.1
    return body


# ---- skirt --------------------------------------------------------------------------------------------------
def angular_extent(points_xy: np.ndarray, theta: np.ndarray, half_width: float) -> np.ndarray:
    """Largest radius of ``points_xy`` (relative to the axis) within ``half_width`` of each angle (0 if none)."""
    rho = np.hypot(points_xy[:, 0], points_xy[:, 1])
    phi = np.arctan2(points_xy[:, 1], points_xy[:, 0])
    d = np.abs((phi[None, :] - theta[:, None] + np.pi) % (2 * np.pi) - np.pi)
    return np.where(d < half_width, rho[None, :], 0.0).max(axis=1) if len(rho) else np.zeros_like(theta)


def skirt_geometry(rest: np.ndarray, part_ids: np.ndarray, part_names: list[str], joints: np.ndarray,
                   joint_names: list[str], cfg: dict) -> dict:
    """Vertices [R+1, S, 3] of the skirt around the warm-up pose, plus what the stats need."""
    segments, rings, flare = int(cfg["segments"]), int(cfg["rings"]), float(cfg["flare"])
    pelvis = joints[joint_names.index("Pelvis")]
    knee_z = 0.5 * (joints[joint_names.index("L_Knee"), 2] + joints[joint_names.index("R_Knee"), 2])
    z_top = float(pelvis[2] + cfg["waist_above_pelvis"])
    z_hem = float(knee_z + cfg["hem_above_knee"])
    keep = np.isin(part_ids, [part_names.index(n) for n in ("torso", "left_leg", "right_leg")])
    pts = rest[keep]
    rel = pts[:, :2] - pelvis[None, :2]
    theta = 2 * np.pi * np.arange(segments) / segments
    half = 1.5 * np.pi / segments

    def extent(z: float, band: float = 0.015) -> np.ndarray:
        m = np.abs(pts[:, 2] - z) < band
        e = angular_extent(rel[m], theta, half)
        for _ in range(segments):  # empty bins take their neighbours' extent
            if not (e == 0).any():
                break
            e = np.where(e == 0, np.maximum(np.roll(e, 1), np.roll(e, -1)), e)
        return e

    r_waist = extent(z_top) + cfg["waist_clearance"]
    r_hem = flare * float(r_waist.mean())
    verts = np.zeros((rings + 1, segments, 3))
    radius = np.zeros((rings + 1, segments))
    prev = r_waist
    for r in range(rings + 1):
        t = r / rings
        z = z_top - t * (z_top - z_hem)
        lin = (1 - t) * r_waist + t * r_hem
        rad = lin if r == 0 else np.maximum(np.maximum(lin, extent(z) + cfg["body_clearance"]), prev)
        radius[r], prev = rad, rad
        verts[r, :, 0] = pelvis[0] + rad * np.cos(theta)
        verts[r, :, 1] = pelvis[1] + rad * np.sin(theta)
        verts[r, :, 2] = z
    return {"verts": verts, "z_top": z_top, "z_hem": z_hem, "r_waist": r_waist, "r_hem": r_hem, "radius": radius}


def build_skirt(scene, geo: dict, body: bpy.types.Object, cfg: dict, timer: Timer) -> bpy.types.Object:
    verts = geo["verts"]
    rings, segments = verts.shape[0] - 1, verts.shape[1]
    idx = np.arange((rings + 1) * segments).reshape(rings + 1, segments)
    quads = []
    for r in range(rings):
        for s in range(segments):
            s1 = (s + 1) % segments
            quads.append((idx[r, s], idx[r + 1, s], idx[r + 1, s1], idx[r, s1]))  # outward normals
    quads = np.array(quads)
    skirt = mesh_object("Skirt", verts.reshape(-1, 3), quads, scene)
    mesh = skirt.data
    mesh.shade_smooth()
    uv = mesh.uv_layers.new(name="UVMap")
    uvs = []
    for r in range(rings):
        for s in range(segments):
            for rr, ss in ((r, s), (r + 1, s), (r + 1, s + 1), (r, s + 1)):
                uvs.append((ss / segments, 1.0 - rr / rings))
    uv.data.foreach_set("uv", np.array(uvs, dtype=np.float32).ravel())
    mid = geo["radius"][rings // 2].mean()
    length = geo["z_top"] - geo["z_hem"]
    checks_u = int(cfg["checks_around"])
    checks_v = max(1, int(round(length / (2 * math.pi * mid / checks_u))))
    mesh.materials.append(checker_material(checks_u, checks_v))

    pin = skirt.vertex_groups.new(name="pin")
    pin.add([int(i) for i in idx[0]], 1.0, "REPLACE")

    sd = skirt.modifiers.new("SurfaceDeform", "SURFACE_DEFORM")
    sd.target = body
    sd.vertex_group = "pin"
    cloth = skirt.modifiers.new("Cloth", "CLOTH")
    sub = skirt.modifiers.new("Subdivision", "SUBSURF")
    sub.levels = 0
    sub.render_levels = int(cfg["render_subdivisions"])
    sub.show_viewport = False  # the evaluated (viewport) mesh is the simulated one; renders are smoothed

    s = cloth.settings
    s.quality = int(cfg["quality"])
    s.mass = 0.3
    s.air_damping = 1.0
    s.tension_stiffness = s.compression_stiffness = s.shear_stiffness = 15.0
    s.bending_stiffness = float(cfg.get("bending", 0.5))
    s.tension_damping = s.compression_damping = s.shear_damping = 5.0
    s.vertex_group_mass = "pin"
    s.pin_stiffness = 1.0
    c = cloth.collision_settings
    c.use_collision = True
    c.distance_min = 0.005
    c.collision_quality = int(cfg["collision_quality"])
    c.use_self_collision = False
    cache = cloth.point_cache
    cache.frame_start = scene.frame_start
    cache.frame_end = scene.frame_end

    with timer.stage("bind surface deform"):
        scene.frame_set(scene.frame_start)
        bpy.context.view_layer.objects.active = skirt
        with bpy.context.temp_override(object=skirt, active_object=skirt):
            bpy.ops.object.surfacedeform_bind(modifier=sd.name)
        bpy.context.evaluated_depsgraph_get().update()
        scene.frame_set(scene.frame_start)
        if not sd.is_bound:
            raise RuntimeError("Surface Deform did not bind the skirt to the body")
    return skirt


def bake_cloth(scene, skirt: bpy.types.Object) -> None:
    cloth = skirt.modifiers["Cloth"]
    scene.frame_set(scene.frame_start)
    with bpy.context.temp_override(scene=scene, object=skirt, active_object=skirt, point_cache=cloth.point_cache):
        bpy.ops.ptcache.bake(bake=True)
    if not cloth.point_cache.is_baked:
        raise RuntimeError("cloth cache did not bake")


# ---- cameras and renders ------------------------------------------------------------------------------------
def apply_camera(obj: bpy.types.Object, cam: dict, scene: bpy.types.Scene) -> None:
    w, h = int(cam["width"]), int(cam["height"])
    data = obj.data
    data.type = "PERSP"
    data.sensor_fit = "VERTICAL"
    data.sensor_height = SENSOR_HEIGHT_MM
    data.sensor_width = SENSOR_HEIGHT_MM * w / h
    data.lens = float(cam["fy"]) * SENSOR_HEIGHT_MM / h
    data.shift_x = (w / 2.0 - float(cam["cx"])) / h
    data.shift_y = (float(cam["cy"]) - h / 2.0) / h
    data.clip_start, data.clip_end = 0.01, 100.0
    obj.matrix_world = Matrix([list(map(float, row)) for row in cam["world_from_camera"]])
    scene.render.resolution_x, scene.render.resolution_y = w, h
    if abs(float(cam["fx"]) - float(cam["fy"])) > 1e-6 * float(cam["fy"]):
        raise ValueError(f"camera with fx {cam['fx']} != fy {cam['fy']}: non-square pixels are not supported")
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    scene.camera = obj


def render_to(scene: bpy.types.Scene, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


# ---- measurements -------------------------------------------------------------------------------------------
def evaluated_vertices(obj: bpy.types.Object) -> np.ndarray:
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    mesh = ev.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    co = co.reshape(-1, 3).astype(np.float64)
    m = np.array(ev.matrix_world)
    return (co @ m[:3, :3].T + m[:3, 3]).astype(np.float32)


def signed_distances(body_verts: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance of each point to the body surface, negative inside (by the nearest face's outward normal)."""
    tree = BVHTree.FromPolygons(body_verts.tolist(), faces.tolist(), all_triangles=True)
    out = np.full(len(points), np.inf)
    for i, p in enumerate(points.tolist()):
        loc, normal, _, dist = tree.find_nearest(p)
        if loc is not None:
            out[i] = dist if (np.asarray(p) - np.asarray(loc)) @ np.asarray(normal) >= 0 else -dist
    return out


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: cloth_scene_blender.py <blender_inputs.json> <out>")
    t_all = time.perf_counter()
    timer = Timer()
    cfg = json.loads(Path(argv[0]).read_text())
    out = Path(argv[1]).resolve()
    with np.load(cfg["npz"], allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    part_names = [str(n) for n in data["part_names"]]
    joint_names = [str(n) for n in data["joint_names"]]
    num_frames = int(data["vertices"].shape[0])
    warmup = int(cfg["warmup"])
    start = warmup + 1  # Blender frame of motion frame 0

    with timer.stage("build scene"):
        scene = reset_scene(float(cfg["fps"]), int(cfg.get("threads", 0)))
        scene.frame_start, scene.frame_end = 1, warmup + num_frames
        set_cycles(scene, int(cfg["samples"]))
        setup_world_and_light(scene)
        body = build_body(scene, data, part_names, warmup)
        geo = skirt_geometry(data["rest_vertices"], data["part_ids"], part_names, data["rest_joints"],
                             joint_names, cfg["skirt"])
    skirt = build_skirt(scene, geo, body, cfg["skirt"], timer)
    segments, rings = geo["verts"].shape[1], geo["verts"].shape[0] - 1
    waist_ring = np.arange(segments)
    hem_ring = rings * segments + np.arange(segments)

    with timer.stage("bake cloth"):
        bake_cloth(scene, skirt)

    with timer.stage("measure"):
        pelvis_j = joint_names.index("Pelvis")
        skirt_frames = np.zeros((num_frames, (rings + 1) * segments, 3), np.float32)
        scene.frame_set(scene.frame_start)
        # The waist ring in the pelvis joint's frame (warm-up pose = frame-0 root, so frame 0's pelvis transform).
        pelvis_t = data["pelvis_transforms"].astype(np.float64)
        ring_start = evaluated_vertices(skirt)[waist_ring].astype(np.float64)

        def in_pelvis(points: np.ndarray, f: int) -> np.ndarray:
            inv = np.linalg.inv(pelvis_t[f])
            return points @ inv[:3, :3].T + inv[:3, 3]

        ring_local0 = in_pelvis(ring_start, 0)
        per_frame = []
        for f in range(num_frames):
            scene.frame_set(start + f)
            v = evaluated_vertices(skirt)
            skirt_frames[f] = v
            axis = data["joints"][f, pelvis_j]
            hem_r = np.hypot(v[hem_ring, 0] - axis[0], v[hem_ring, 1] - axis[1])
            waist_r = np.hypot(v[waist_ring, 0] - axis[0], v[waist_ring, 1] - axis[1])
            sd = signed_distances(data["vertices"][f], data["faces"], v)
            dev = np.linalg.norm(in_pelvis(v[waist_ring].astype(np.float64), f) - ring_local0, axis=1)
            per_frame.append({
                "motion_frame": f, "blender_frame": start + f,
                "hem_radius": float(hem_r.mean()), "hem_radius_max": float(hem_r.max()),
                "waist_radius": float(waist_r.mean()), "hem_height": float(v[hem_ring, 2].mean()),
                "waist_gap_min": float(sd[waist_ring].min()), "waist_gap_max": float(sd[waist_ring].max()),
                "waist_pelvis_dev": float(dev.max()),
                "inside_body": int((sd < -0.002).sum()),
                "finite": bool(np.isfinite(v).all()),
            })
            p = per_frame[-1]
            print(f"[blender] frame {f}: hem r {p['hem_radius']:.3f} waist r {p['waist_radius']:.3f} waist gap "
                  f"{1000 * p['waist_gap_min']:.0f}..{1000 * p['waist_gap_max']:.0f} mm, waist vs pelvis "
                  f"{1000 * p['waist_pelvis_dev']:.0f} mm, inside {p['inside_body']}", flush=True)
        hem = [p["hem_radius"] for p in per_frame]
        stats = {
            "frame_mapping": f"motion frame f = Blender frame {start} + f",
            "warmup_frames": warmup,
            "skirt_vertices": int(skirt_frames.shape[1]), "segments": segments, "rings": rings,
            "initial": {"waist_radius_mean": float(geo["r_waist"].mean()), "hem_radius": float(geo["r_hem"]),
                        "z_top": geo["z_top"], "z_hem": geo["z_hem"]},
            "max_hem_radius": float(max(hem)), "max_hem_radius_frame": int(np.argmax(hem)),
            "min_hem_radius": float(min(hem)),
            "mean_waist_radius": float(np.mean([p["waist_radius"] for p in per_frame])),
            "waist_gap_range": [float(min(p["waist_gap_min"] for p in per_frame)),
                                float(max(p["waist_gap_max"] for p in per_frame))],
            "max_waist_pelvis_dev": float(max(p["waist_pelvis_dev"] for p in per_frame)),
            "max_inside_body": int(max(p["inside_body"] for p in per_frame)),
            "frames": per_frame,
        }
        stats["max_hem_over_waist"] = stats["max_hem_radius"] / stats["mean_waist_radius"]
        (out / "cloth_stats.json").write_text(json.dumps(stats, indent=1))
        quads = np.array([p.vertices[:] for p in skirt.data.polygons], dtype=np.int32)
        np.savez_compressed(out / "skirt_frames.npz", vertices=skirt_frames, faces=quads,
                            waist_ring=waist_ring.astype(np.int32), hem_ring=hem_ring.astype(np.int32),
                            motion_frames=np.arange(num_frames, dtype=np.int32))

    with timer.stage("save blend"):
        bpy.ops.wm.save_as_mainfile(filepath=str(out / "scene.blend"))

    # Renders, motion frame by motion frame (the cache is baked; each frame is evaluated once).
    cam_obj = bpy.data.objects.new("RenderCamera", bpy.data.cameras.new("RenderCamera"))
    scene.collection.objects.link(cam_obj)
    jobs: dict[int, list[tuple[dict, Path]]] = {}
    photo = cfg["photo"]
    if cfg.get("render", True):
        jobs.setdefault(int(photo["frame"]), []).append((photo["camera"], out / "photo.png"))
        for stream in cfg["streams"]:
            for i, cam in enumerate(stream["frames"]):
                jobs.setdefault(int(cam["frame"]), []).append((cam, out / stream["folder"] / f"{i:04d}.png"))
    total = sum(len(v) for v in jobs.values())
    done = 0
    with timer.stage("render"):
        t0 = time.perf_counter()
        for f in sorted(jobs):
            scene.frame_set(start + f)
            for cam, path in jobs[f]:
                apply_camera(cam_obj, cam, scene)
                render_to(scene, path)
                done += 1
            el = time.perf_counter() - t0
            print(f"[blender] rendered motion frame {f}: {done}/{total} images, {el:.0f} s "
                  f"({el / done:.2f} s/image)", flush=True)
    with timer.stage("save blend"):
        bpy.ops.wm.save_as_mainfile(filepath=str(out / "scene.blend"))
    timings = dict(timer.times)
    timings["renders"] = total
    timings["seconds_per_render"] = timer.times["render"] / max(total, 1)
    timings["blender_total"] = time.perf_counter() - t_all
    (out / "blender_timings.json").write_text(json.dumps(timings, indent=1))
    print(f"[blender] done in {timings['blender_total']:.1f} s", flush=True)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    main(argv)
