"""Sidebar panels in the 3D View, tab "Ani3DHuman": backend, subject, settings, animate, results."""

from __future__ import annotations

import bpy

from . import session, splat_import


class _Panel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Ani3DHuman"


def _eta_text(eta_s: float) -> str:
    if eta_s < 0:
        return ""
    minutes, seconds = divmod(int(round(eta_s)), 60)
    return f"ETA {minutes}:{seconds:02d}"


class ANI3DHUMAN_PT_backend(_Panel, bpy.types.Panel):
    bl_idname = "ANI3DHUMAN_PT_backend"
    bl_label = "Backend"

    def draw(self, context):
        props = context.scene.ani3dhuman
        layout = self.layout
        layout.prop(props, "endpoint")
        row = layout.row()
        row.label(text=props.connection_status, icon="CHECKMARK" if props.connected else "ERROR")
        row.operator("ani3dhuman.connect", text="", icon="FILE_REFRESH")
        row = layout.row(align=True)
        if session.backend_running():
            row.operator("ani3dhuman.stop_backend", icon="CANCEL")
        else:
            row.operator("ani3dhuman.start_backend", icon="PLAY")


class ANI3DHUMAN_PT_subject(_Panel, bpy.types.Panel):
    bl_idname = "ANI3DHUMAN_PT_subject"
    bl_label = "Subject"

    def draw(self, context):
        props = context.scene.ani3dhuman
        layout = self.layout
        row = layout.row(align=True)
        row.prop(props, "armature")
        row.operator("ani3dhuman.add_body", text="", icon="ADD")
        layout.prop(props, "reference_image")
        layout.prop(props, "reference_camera")
        layout.prop(props, "reference_frame")


class ANI3DHUMAN_PT_settings(_Panel, bpy.types.Panel):
    bl_idname = "ANI3DHUMAN_PT_settings"
    bl_label = "Settings"

    def draw(self, context):
        props = context.scene.ani3dhuman
        layout = self.layout
        layout.prop(props, "use_scene_range")
        row = layout.row(align=True)
        row.enabled = not props.use_scene_range
        row.prop(props, "frame_start")
        row.prop(props, "frame_end")
        layout.prop(props, "quality")
        layout.prop(props, "prior")
        layout.prop(props, "gaussians")
        layout.prop(props, "seed")


class ANI3DHUMAN_PT_dynamics(_Panel, bpy.types.Panel):
    bl_idname = "ANI3DHUMAN_PT_dynamics"
    bl_label = "Clothing Dynamics"
    bl_parent_id = "ANI3DHUMAN_PT_settings"

    def draw_header(self, context):
        self.layout.prop(context.scene.ani3dhuman, "clothing_dynamics", text="")

    def draw(self, context):
        props = context.scene.ani3dhuman
        layout = self.layout
        layout.prop(props, "garment")
        row = layout.row()
        row.enabled = props.clothing_dynamics and props.garment != "none"
        row.prop(props, "cloth_preset")


class ANI3DHUMAN_PT_sampler(_Panel, bpy.types.Panel):
    bl_idname = "ANI3DHUMAN_PT_sampler"
    bl_label = "Sampler"
    bl_parent_id = "ANI3DHUMAN_PT_settings"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        props = context.scene.ani3dhuman
        layout = self.layout
        layout.enabled = props.prior != "none"
        layout.prop(props, "sampler")
        layout.prop(props, "override_sampler")
        col = layout.column()
        col.enabled = props.override_sampler
        for name in ("sampler_steps", "sampler_strength", "sampler_shift", "sampler_guidance",
                     "sampler_guidance_schedule", "sampler_gamma"):
            col.prop(props, name)
        if props.sampler_gamma == "value":
            col.prop(props, "sampler_gamma_value")
        col.prop(props, "sampler_cfg")


class ANI3DHUMAN_PT_animate(_Panel, bpy.types.Panel):
    bl_idname = "ANI3DHUMAN_PT_animate"
    bl_label = "Animate"

    def draw(self, context):
        props = context.scene.ani3dhuman
        layout = self.layout
        job = session.active_job()
        running = job is not None and job.state in ("queued", "running", "done", "downloaded")
        row = layout.row(align=True)
        row.scale_y = 1.4
        sub = row.row(align=True)
        sub.enabled = not running
        sub.operator("ani3dhuman.animate", icon="PLAY")
        sub = row.row(align=True)
        sub.enabled = running
        sub.operator("ani3dhuman.cancel", text="", icon="CANCEL")
        if props.job_id:
            text = f"{props.stage or props.job_state} {props.progress * 100:.0f}% {_eta_text(props.eta_s)}".strip()
            layout.progress(factor=props.progress, type="BAR", text=text)
            layout.label(text=f"Job {props.job_id[:8]}: {props.job_state}")
            if props.message:
                layout.label(text=props.message)
        if props.error:
            layout.label(text=props.error, icon="ERROR")
        preview = bpy.data.images.get(session.PREVIEW_IMAGE)
        if preview is not None and running:
            preview.preview_ensure()
            layout.template_icon(icon_value=preview.preview.icon_id, scale=8.0)


class ANI3DHUMAN_PT_results(_Panel, bpy.types.Panel):
    bl_idname = "ANI3DHUMAN_PT_results"
    bl_label = "Results"

    def draw(self, context):
        props = context.scene.ani3dhuman
        layout = self.layout
        layout.operator("ani3dhuman.import_result", icon="IMPORT")
        layout.prop(props, "result_object")
        col = layout.column()
        col.prop(props, "alembic_path")
        col.operator("ani3dhuman.bake_alembic", icon="EXPORT")
        box = col.box()
        if splat_import.native_splats():
            box.label(text="Alembic keeps the complete splat cache", icon="INFO")
            box.label(text="(velocity, scale, Cd, Alpha, orient, SH).")
        else:
            box.label(text="Alembic keeps positions + velocities only;", icon="INFO")
            box.label(text="PLY sequence and USD keep every attribute.")
        col.prop(props, "ply_dir")
        col.operator("ani3dhuman.export_ply_sequence", icon="EXPORT")
        col.prop(props, "usd_path")
        col.operator("ani3dhuman.export_usd", icon="EXPORT")


CLASSES = (ANI3DHUMAN_PT_backend, ANI3DHUMAN_PT_subject, ANI3DHUMAN_PT_settings, ANI3DHUMAN_PT_dynamics,
           ANI3DHUMAN_PT_sampler,
           ANI3DHUMAN_PT_animate,
           ANI3DHUMAN_PT_results)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
