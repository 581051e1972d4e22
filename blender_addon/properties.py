"""The add-on's scene settings: one PropertyGroup at ``Scene.ani3dhuman``."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

QUALITY_ITEMS = (
    ("preview", "Preview", "Fast: fewer Gaussians and optimisation steps"),
    ("standard", "Standard", "Balanced quality and time"),
    ("high", "High", "Best quality, slowest"),
)


CLOTH_PRESET_ITEMS = (
    ("light", "Light", "Chiffon-like: light and floppy, flares and floats"),
    ("medium", "Medium", "Cotton: the default"),
    ("heavy", "Heavy", "Denim or wool: heavier, stiffer, swings less"),
)
GARMENT_ITEMS = (
    ("auto", "Detect", "Find a skirt in the photo's silhouette (or the imported Gaussians)"),
    ("skirt", "Skirt", "The person wears a skirt (waist to hem)"),
    ("dress", "Dress", "The person wears a dress (chest to hem; the bodice stays on the body)"),
    ("none", "None", "No loose garment: every Gaussian follows the body"),
)
SAMPLER_ITEMS = (
    ("paper", "Paper", "The paper's sampler: fresh noise γ = σ; steps and strength from the quality"),
    ("released", "Released", "The released code's: 7 steps, strength 0.7, λ 0.05, full re-noise, CFG 5, "
                             "81 frames at 480x832"),
)
GAMMA_ITEMS = (
    ("sigma", "σ (paper)", "Fresh-noise fraction γ_i = σ_i"),
    ("full", "1 (released)", "Noise fully redrawn every step"),
    ("value", "Value", "A fixed fraction (Gamma Value)"),
)

NO_PRIOR = ("none", "None (rigid only)", "No video prior: the rigid layer only")
_PRIOR_ITEMS: list[tuple[str, str, str]] = [NO_PRIOR]  # kept alive: Blender does not copy dynamic enum strings


def prior_items(self, _context) -> list[tuple[str, str, str]]:
    """``none`` plus the priors the backend offered in its last hello reply (``known_priors``, JSON)."""
    import json

    try:
        offered = json.loads(self.known_priors or "[]")
    except ValueError:
        offered = []
    items = [NO_PRIOR]
    for entry in offered:
        if isinstance(entry, dict) and entry.get("id") and entry["id"] != "none":
            state = "present" if entry.get("present") else "not downloaded on the backend"
            items.append((entry["id"], entry["id"], f"{entry.get('kind', 'video prior')}, {state}"))
    _PRIOR_ITEMS[:] = items
    return _PRIOR_ITEMS


def _is_armature(_self, obj) -> bool:
    return obj.type == "ARMATURE"


def _is_camera(_self, obj) -> bool:
    return obj.type == "CAMERA"


class Ani3DHumanSettings(bpy.types.PropertyGroup):
    # Backend
    endpoint: StringProperty(name="Endpoint", default="tcp://127.0.0.1:5555",
                             description="ZeroMQ endpoint of the Ani3DHuman compute backend")
    connected: BoolProperty(name="Connected", default=False)
    connection_status: StringProperty(name="Status", default="not connected")

    # Subject
    armature: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature,
                              description="SMPL-X / SMPL rig (or one made by Add Body) whose motion is animated")
    reference_image: StringProperty(name="Image", subtype="FILE_PATH",
                                    description="Photo of the person (PNG/JPEG); empty = the default subject")
    reference_camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=_is_camera,
                                      description="Camera that sees the body as the photo does (optional)")
    reference_frame: IntProperty(name="Reference Frame", default=1,
                                 description="Scene frame whose pose matches the photo")

    # Settings
    use_scene_range: BoolProperty(name="Scene Range", default=True,
                                  description="Animate the scene's frame range")
    frame_start: IntProperty(name="Start", default=1, min=0)
    frame_end: IntProperty(name="End", default=48, min=0)
    quality: EnumProperty(name="Quality", items=QUALITY_ITEMS, default="preview")
    prior: EnumProperty(name="Prior", items=prior_items,
                        description="Video prior the backend offers (Connect refreshes the list), or none")
    known_priors: StringProperty(name="Known Priors", default="[]",
                                 description="The priors of the backend's last hello reply (JSON, set by Connect)")
    gaussians: IntProperty(name="Gaussians", default=20000, min=100, max=2_000_000,
                           description="Number of Gaussians of the person")
    seed: IntProperty(name="Seed", default=0, min=0)

    # Clothing dynamics: a loose garment (skirt, dress) simulated as cloth
    clothing_dynamics: BoolProperty(name="Clothing Dynamics", default=True,
                                    description="Simulate a loose garment (skirt, dress) found on the person as "
                                                "cloth; off: the garment follows the body rigidly")
    cloth_preset: EnumProperty(name="Fabric", items=CLOTH_PRESET_ITEMS, default="medium",
                               description="Fabric of the simulated garment")
    garment: EnumProperty(name="Garment", items=GARMENT_ITEMS, default="auto",
                          description="Which loose garment the person wears (Detect: from the photo)")

    # Advanced: the restoration's sampler (sent with a prior only)
    sampler: EnumProperty(name="Sampler", items=SAMPLER_ITEMS, default="paper",
                          description="Preset of the self-guided sampler")
    override_sampler: BoolProperty(name="Override Sampler", default=False,
                                   description="Send the values below instead of the preset's")
    sampler_steps: IntProperty(name="Steps", default=10, min=1, max=200)
    sampler_strength: FloatProperty(name="Strength", default=0.6, min=0.01, max=1.0)
    sampler_shift: FloatProperty(name="Shift", default=5.0, min=0.01, max=100.0)
    sampler_guidance: FloatProperty(name="Guidance λ", default=0.1, min=0.0, max=1.0)
    sampler_guidance_schedule: EnumProperty(name="λ Schedule", items=(
        ("linear", "Linear", "λ_i = λ·(1−σ_i)"), ("constant", "Constant", "λ_i = λ")), default="linear")
    sampler_gamma: EnumProperty(name="Gamma", items=GAMMA_ITEMS, default="sigma")
    sampler_gamma_value: FloatProperty(name="Gamma Value", default=0.5, min=0.0, max=1.0)
    sampler_cfg: FloatProperty(name="CFG", default=0.0, min=0.0, max=30.0,
                               description="Classifier-free guidance; 0 = the model's default")

    # Job (written by the polling function)
    job_id: StringProperty(name="Job", default="")
    job_state: StringProperty(name="State", default="")
    stage: StringProperty(name="Stage", default="")
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    eta_s: FloatProperty(name="ETA", default=-1.0)
    message: StringProperty(name="Message", default="")
    error: StringProperty(name="Error", default="")

    # Results
    result_dir: StringProperty(name="Result Folder", subtype="DIR_PATH", default="",
                               description="Local folder of the last result (frames/frame_XXXXXX.ply)")
    result_object: PointerProperty(name="Result", type=bpy.types.Object)
    alembic_path: StringProperty(name="Alembic", subtype="FILE_PATH", default="//ani3dhuman/splats.abc")
    ply_dir: StringProperty(name="PLY Folder", subtype="DIR_PATH", default="//ani3dhuman/ply/")
    usd_path: StringProperty(name="USD", subtype="FILE_PATH", default="//ani3dhuman/splats.usdc")

    def frame_range(self, scene) -> tuple[int, int]:
        if self.use_scene_range:
            return scene.frame_start, scene.frame_end
        return self.frame_start, self.frame_end


CLASSES = (Ani3DHumanSettings,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.ani3dhuman = PointerProperty(type=Ani3DHumanSettings)


def unregister() -> None:
    del bpy.types.Scene.ani3dhuman
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
