"""Operators: thin translations from UI actions to plain function calls, reporting errors (never a traceback).

idnames: ``ani3dhuman.add_body``, ``animate``, ``cancel``, ``import_result``, ``bake_alembic``,
``export_ply_sequence``, ``export_usd``, ``start_backend``, ``stop_backend``, ``connect``.
"""

from __future__ import annotations

import logging

import bpy
from bpy.props import IntProperty, StringProperty

from . import bake, body_rig, preferences, rig_export, session, splat_import
from .wire import client

log = logging.getLogger(__name__)

# Errors that are the user's to fix: reported with their message as is.
USER_ERRORS = (session.SessionError, rig_export.RigError, splat_import.ResultError, bake.BakeError,
               body_rig.BodyError, client.ServiceError, client.ServiceTimeout, OSError)


def run_reporting(operator, fn, *args, **kwargs):
    """Call ``fn``; on failure report an ERROR in the UI and return None (no traceback reaches the user)."""
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as exc:
        operator.report({"ERROR"}, str(exc) or type(exc).__name__)
    except Exception as exc:  # a bug: keep the UI clean, log the details
        log.exception("Ani3DHuman: unexpected error in %s", operator.bl_idname)
        operator.report({"ERROR"}, f"internal error ({type(exc).__name__}: {exc}); details in the console")
    return None


def _timer_step():
    """bpy.app.timers callback: one poll step on the main thread; never raises."""
    try:
        return session.poll_backend(bpy.context)
    except Exception:  # keep the timer from dying with a traceback in the UI
        log.exception("Ani3DHuman: polling failed")
        return None


def start_polling() -> None:
    """Poll the active job from a timer (no-op in background mode, where timers never fire)."""
    if not bpy.app.background and not bpy.app.timers.is_registered(_timer_step):
        bpy.app.timers.register(_timer_step, first_interval=session.POLL_INTERVAL_S, persistent=True)


def _props(context):
    return context.scene.ani3dhuman


class ANI3DHUMAN_OT_connect(bpy.types.Operator):
    bl_idname = "ani3dhuman.connect"
    bl_label = "Connect"
    bl_description = "Check the connection to the backend"

    def execute(self, context):
        info = run_reporting(self, session.connect, _props(context))
        if info is None:
            return {"CANCELLED"}
        self.report({"INFO"}, f"Ani3DHuman backend: {_props(context).connection_status}")
        return {"FINISHED"}


class ANI3DHUMAN_OT_start_backend(bpy.types.Operator):
    bl_idname = "ani3dhuman.start_backend"
    bl_label = "Start Local Backend"
    bl_description = "Run 'python -m backend serve' with the Python set in the add-on preferences"

    def execute(self, context):
        props = _props(context)
        proc = run_reporting(self, session.start_backend, preferences.get_prefs(context), props.endpoint)
        if proc is None:
            return {"CANCELLED"}
        props.connection_status = "starting (press Connect in a few seconds)"
        self.report({"INFO"}, f"backend starting (pid {proc.process.pid}), log: {proc.log_path}")
        return {"FINISHED"}


class ANI3DHUMAN_OT_stop_backend(bpy.types.Operator):
    bl_idname = "ani3dhuman.stop_backend"
    bl_label = "Stop Local Backend"
    bl_description = "Shut down the backend started from Blender"

    def execute(self, context):
        stopped = run_reporting(self, session.stop_backend)
        if not stopped:
            self.report({"WARNING"}, "no local backend is running")
            return {"CANCELLED"}
        props = _props(context)
        props.connected, props.connection_status = False, "stopped"
        return {"FINISHED"}


class ANI3DHUMAN_OT_add_body(bpy.types.Operator):
    bl_idname = "ani3dhuman.add_body"
    bl_label = "Add Body"
    bl_description = "Add the backend's body model as an armature with a skinned mesh"
    bl_options = {"REGISTER", "UNDO"}

    body: StringProperty(name="Body", default="default")

    def execute(self, context):
        props = _props(context)

        def fetch_and_build():
            session.connect(props, timeout_s=3.0)  # fail fast when no backend is listening
            try:
                reply = session.get_client(props.endpoint).body_model(self.body, timeout_s=60.0)
            except client.ServiceTimeout:
                raise session._unreachable(props.endpoint) from None
            return body_rig.build_body_rig(context, reply.arrays, reply.header, body_name=self.body)

        made = run_reporting(self, fetch_and_build)
        if made is None:
            return {"CANCELLED"}
        arm, _mesh = made
        props.armature = arm
        self.report({"INFO"}, f"added '{arm.name}'")
        return {"FINISHED"}


class ANI3DHUMAN_OT_animate(bpy.types.Operator):
    bl_idname = "ani3dhuman.animate"
    bl_label = "Animate"
    bl_description = "Send the rig's motion and the photo to the backend; the result is imported when done"

    def execute(self, context):
        root = preferences.results_root(preferences.get_prefs(context))
        job = run_reporting(self, session.start_job, context, _props(context), root)
        if job is None:
            return {"CANCELLED"}
        start_polling()
        self.report({"INFO"}, f"job {job.id} queued")
        return {"FINISHED"}


class ANI3DHUMAN_OT_cancel(bpy.types.Operator):
    bl_idname = "ani3dhuman.cancel"
    bl_label = "Cancel"
    bl_description = "Cancel the running job"

    def execute(self, context):
        if run_reporting(self, session.cancel_job, _props(context)) is None:
            return {"CANCELLED"}
        self.report({"INFO"}, "cancel requested")
        return {"FINISHED"}


class ANI3DHUMAN_OT_import_result(bpy.types.Operator):
    bl_idname = "ani3dhuman.import_result"
    bl_label = "Import Result"
    bl_description = "Import a result folder (frames/frame_XXXXXX.ply) as an animated point cloud"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Result Folder", subtype="DIR_PATH", default="")
    frame_start: IntProperty(name="First Frame", default=-1,
                             description="Scene frame showing result frame 0 (-1: the frame range start)")

    def invoke(self, context, event):
        if not self.directory and _props(context).result_dir:
            self.directory = _props(context).result_dir
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        props = _props(context)
        folder = bpy.path.abspath(self.directory or props.result_dir)
        if not folder:
            self.report({"ERROR"}, "no result folder given")
            return {"CANCELLED"}
        start = self.frame_start if self.frame_start >= 0 else props.frame_range(context.scene)[0]
        obj = run_reporting(self, splat_import.import_result, context, folder, start)
        if obj is None:
            return {"CANCELLED"}
        props.result_object = obj
        props.result_dir = folder
        self.report({"INFO"}, f"imported '{obj.name}' ({obj[splat_import.PROP_NUM_FRAMES]} frames)")
        return {"FINISHED"}


def _result_object(context):
    obj = _props(context).result_object
    if obj is None or obj.name not in context.scene.objects:
        active = context.active_object
        obj = active if active is not None and active.get(splat_import.PROP_JOB) else None
    return obj


class ANI3DHUMAN_OT_bake_alembic(bpy.types.Operator):
    bl_idname = "ani3dhuman.bake_alembic"
    bl_label = "Bake Alembic"
    bl_description = ("Write the result per frame to Alembic: the complete splat cache in Blender 5.3+, positions "
                      "and velocities before")

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="")

    def execute(self, context):
        path = self.filepath or _props(context).alembic_path
        written = run_reporting(self, bake.bake_alembic, context, _result_object(context), path)
        if written is None:
            return {"CANCELLED"}
        self.report({"INFO"}, f"Alembic written: {written} ({bake.alembic_note()})")
        return {"FINISHED"}


class ANI3DHUMAN_OT_export_ply_sequence(bpy.types.Operator):
    bl_idname = "ani3dhuman.export_ply_sequence"
    bl_label = "Export PLY Sequence"
    bl_description = "Copy the per-frame 3DGS PLY files (every attribute) named by scene frame"

    directory: StringProperty(name="Folder", subtype="DIR_PATH", default="")

    def execute(self, context):
        folder = self.directory or _props(context).ply_dir
        files = run_reporting(self, bake.export_ply_sequence, _result_object(context), folder)
        if files is None:
            return {"CANCELLED"}
        self.report({"INFO"}, f"{len(files)} PLY files written to {files[0].parent}")
        return {"FINISHED"}


class ANI3DHUMAN_OT_export_usd(bpy.types.Operator):
    bl_idname = "ani3dhuman.export_usd"
    bl_label = "Export USD"
    bl_description = "Write the animated point cloud with every Gaussian attribute to USD"

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="")

    def execute(self, context):
        path = self.filepath or _props(context).usd_path
        written = run_reporting(self, bake.export_usd, context, _result_object(context), path)
        if written is None:
            return {"CANCELLED"}
        self.report({"INFO"}, f"USD written: {written}")
        return {"FINISHED"}


CLASSES = (ANI3DHUMAN_OT_connect, ANI3DHUMAN_OT_start_backend, ANI3DHUMAN_OT_stop_backend, ANI3DHUMAN_OT_add_body,
           ANI3DHUMAN_OT_animate, ANI3DHUMAN_OT_cancel, ANI3DHUMAN_OT_import_result, ANI3DHUMAN_OT_bake_alembic,
           ANI3DHUMAN_OT_export_ply_sequence, ANI3DHUMAN_OT_export_usd)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    if bpy.app.timers.is_registered(_timer_step):
        bpy.app.timers.unregister(_timer_step)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
