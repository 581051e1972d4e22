"""The add-on's conversation with the backend, as plain functions the thin operators call.

Blender's UI must never block and bpy is never touched from another thread, so a job is a small state machine
stepped by ``poll_backend`` on the main thread: a ``bpy.app.timers`` callback calls it in the UI; scripts and
tests (background mode has no timers) call it directly in a loop. Each step reads the progress messages that
have arrived, asks for the job's status now and then, downloads finished frames a chunk at a time into a local
result folder, and finally imports it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import convert, ply_io, rig_export, splat_import
from .wire import client, protocol

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 1.0  # how often a running job's status is asked for (progress messages come in between)
MAX_STATUS_FAILURES = 10  # consecutive status timeouts before the job is declared lost
DOWNLOAD_CHUNK = 4  # frames per result request (one request per poll step keeps the UI responsive)
POLL_INTERVAL_S = 0.25


class SessionError(ValueError):
    """A user-facing problem (bad input, backend unreachable, job failed); the message says what to do."""


# ---------------------------------------------------------------------------------------------------------
# Connection

_CLIENTS: dict[str, client.Client] = {}


def get_client(endpoint: str) -> client.Client:
    """One client per endpoint for the whole Blender session."""
    endpoint = endpoint.strip()
    if not endpoint:
        raise SessionError("backend endpoint is empty: set it in the Backend panel (e.g. tcp://127.0.0.1:5555)")
    if endpoint not in _CLIENTS:
        try:
            _CLIENTS[endpoint] = client.Client(endpoint, timeout_s=10.0)
        except Exception as exc:  # zmq raises ZMQError for malformed endpoints
            raise SessionError(f"invalid backend endpoint {endpoint!r}: {exc}") from None
    return _CLIENTS[endpoint]


def close_clients() -> None:
    for c in _CLIENTS.values():
        c.close()
    _CLIENTS.clear()


def _unreachable(endpoint: str) -> SessionError:
    return SessionError(f"backend not reachable at {endpoint}: start it (Backend panel > Start Local Backend, "
                        f"or `ani3dhuman serve`) and press Connect")


def connect(props, timeout_s: float = 3.0) -> dict:
    """Say hello to the backend at ``props.endpoint``; updates ``props.connected`` / ``connection_status``."""
    try:
        info = get_client(props.endpoint).hello(timeout_s=timeout_s)
    except client.ServiceTimeout:
        props.connected = False
        props.connection_status = "not reachable"
        raise _unreachable(props.endpoint) from None
    except client.ServiceError as exc:
        props.connected = False
        props.connection_status = "error"
        raise SessionError(f"backend refused hello: {exc}") from None
    if info.get("protocol_version") != protocol.PROTOCOL_VERSION:
        props.connected = False
        props.connection_status = "incompatible"
        raise SessionError(f"backend speaks protocol {info.get('protocol_version')}, this add-on "
                           f"{protocol.PROTOCOL_VERSION}: update the add-on or the backend")
    remember_priors(props, info)
    devices = ", ".join(info.get("devices", [])) or "?"
    props.connected = True
    props.connection_status = f"connected ({info.get('versions', {}).get('backend', '?')}, {devices})"
    return info


def remember_priors(props, hello: dict) -> list[str]:
    """Keep the priors a hello reply offers (``priors`` ids, with ``prior_models`` details) for the panel's menu;
    a selected prior the backend no longer offers falls back to ``none``. Returns the ids."""
    details = {m.get("id"): m for m in hello.get("prior_models", []) if isinstance(m, dict)}
    ids = [p for p in hello.get("priors", []) if isinstance(p, str) and p != "none"]
    selected = props.prior
    props.known_priors = json.dumps([{"id": p, "kind": details.get(p, {}).get("kind", "video prior"),
                                      "present": bool(details.get(p, {}).get("present"))} for p in ids])
    props.prior = selected if selected in ids else "none"
    return ids


# ---------------------------------------------------------------------------------------------------------
# Local backend process

@dataclass
class BackendProcess:
    process: subprocess.Popen
    endpoint: str
    log_path: Path


_BACKEND: BackendProcess | None = None


def start_backend(prefs, endpoint: str) -> BackendProcess:
    """Start ``python -m backend serve`` with the configured Python (returns at once; the server needs a few
    seconds before it answers ``connect``)."""
    global _BACKEND
    if _BACKEND is not None and _BACKEND.process.poll() is None:
        raise SessionError(f"a local backend is already running (pid {_BACKEND.process.pid}) at {_BACKEND.endpoint}")
    python = prefs.python_path
    if not python or not Path(python).is_file():
        raise SessionError("set 'Backend Python' in the add-on preferences to the backend environment's Python "
                           f"(got {python!r})")
    cwd = prefs.backend_dir or None
    if cwd is not None and not Path(cwd).is_dir():
        raise SessionError(f"'Backend Folder' in the add-on preferences does not exist: {cwd}")
    jobs = Path(prefs.jobs_dir)
    jobs.mkdir(parents=True, exist_ok=True)
    log_path = jobs / "server.log"
    log_file = open(log_path, "ab")
    try:
        process = subprocess.Popen([python, "-m", "backend", "serve", "--endpoint", endpoint, "--jobs", str(jobs)],
                                   cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise SessionError(f"could not start the backend with {python}: {exc}") from None
    finally:
        log_file.close()
    _BACKEND = BackendProcess(process, endpoint, log_path)
    return _BACKEND


def wait_for_backend(props, timeout_s: float = 60.0) -> dict:
    """Block until the backend answers hello (for scripts and tests; the UI presses Connect instead)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if _BACKEND is not None and _BACKEND.process.poll() is not None:
            raise SessionError(f"the local backend exited with code {_BACKEND.process.returncode}; "
                               f"see {_BACKEND.log_path}")
        try:
            return connect(props, timeout_s=2.0)
        except SessionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop_backend(timeout_s: float = 10.0) -> bool:
    """Ask the local backend to shut down, then terminate it if it does not. Returns whether one was running."""
    global _BACKEND
    backend = _BACKEND
    if backend is None or backend.process.poll() is not None:
        _BACKEND = None
        return False
    try:
        get_client(backend.endpoint).shutdown(timeout_s=3.0)
    except (client.ServiceTimeout, client.ServiceError, SessionError):
        pass
    try:
        backend.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        backend.process.terminate()
        try:
            backend.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            backend.process.kill()
            backend.process.wait()
    _BACKEND = None
    return True


def backend_running() -> bool:
    return _BACKEND is not None and _BACKEND.process.poll() is None


# ---------------------------------------------------------------------------------------------------------
# Building a job from the scene

def camera_json(scene, camera_obj) -> dict:
    """A Blender camera object -> the camera JSON contract (docs/design.md §3) at the scene's current frame."""
    cam = camera_obj.data
    if cam.type != "PERSP":
        raise SessionError(f"reference camera '{camera_obj.name}' must be a perspective camera, got {cam.type}")
    render = scene.render
    scale = render.resolution_percentage / 100.0
    width, height = int(render.resolution_x * scale), int(render.resolution_y * scale)
    aspect = render.pixel_aspect_y / render.pixel_aspect_x
    fit = cam.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if width >= height else "VERTICAL"
    if fit == "HORIZONTAL":
        fx = cam.lens / cam.sensor_width * width
        fy = fx * aspect
    else:
        fy = cam.lens / cam.sensor_height * height
        fx = fy / aspect
    size = max(width, height)
    matrix = np.asarray(camera_obj.matrix_world, dtype=np.float64)
    rotation, _ = convert.polar_rotation(matrix[:3, :3])
    world = np.eye(4)
    world[:3, :3], world[:3, 3] = rotation, matrix[:3, 3]
    return {"width": width, "height": height, "fx": fx, "fy": fy, "cx": width / 2 - cam.shift_x * size,
            "cy": height / 2 + cam.shift_y * size, "world_from_camera": world.tolist()}


def camera_from_json(scene, camera: dict, name: str = "Ani3DHuman Camera"):
    """The camera JSON contract (docs/design.md §3) -> a new Blender camera object, linked to the scene; the scene's
    render size becomes the camera's (100 %, square pixels). Inverse of ``camera_json``.

    Raises:
        SessionError: missing fields, or non-square pixels (``fx`` != ``fy``), which a Blender camera cannot hold.
    """
    import bpy
    from mathutils import Matrix

    try:
        width, height = int(camera["width"]), int(camera["height"])
        fx, fy, cx, cy = (float(camera[k]) for k in ("fx", "fy", "cx", "cy"))
        matrix = np.asarray(camera["world_from_camera"], dtype=np.float64).reshape(4, 4)
    except (KeyError, TypeError, ValueError) as exc:
        raise SessionError(f"camera JSON: expected width, height, fx, fy, cx, cy, world_from_camera ({exc})") from None
    if abs(fx - fy) > 1e-4 * fx:
        raise SessionError(f"camera JSON: fx {fx} != fy {fy}; Blender cameras have square pixels")
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    data = bpy.data.cameras.new(name)
    size = max(width, height)
    data.sensor_fit = "HORIZONTAL" if width >= height else "VERTICAL"
    data.lens = fx / width * data.sensor_width if width >= height else fy / height * data.sensor_height
    data.shift_x, data.shift_y = (width / 2 - cx) / size, (cy - height / 2) / size
    obj = bpy.data.objects.new(name, data)
    obj.matrix_basis = Matrix([list(row) for row in matrix])  # rows; no parent: basis == world
    scene.collection.objects.link(obj)
    return obj


def build_spec(scene, props) -> tuple[dict, str | None]:
    """Validate the panel's inputs and build the job spec (motion arrays included) and the image path.

    Raises:
        SessionError / rig_export.RigError: naming the input to fix.
    """
    import bpy

    start, end = props.frame_range(scene)
    if end < start:
        raise SessionError(f"frame range is empty: start {start} > end {end}")
    binding = rig_export.bind_rig(props.armature)
    image = None
    if props.reference_image.strip():
        image = bpy.path.abspath(props.reference_image)
        if not os.path.isfile(image):
            raise SessionError(f"reference image not found: {image}")
        with open(image, "rb") as fh:
            magic = fh.read(8)
        if not (magic.startswith(b"\x89PNG") or magic.startswith(b"\xff\xd8")):
            raise SessionError(f"reference image must be a PNG or JPEG file: {image}")
    if image is not None and props.reference_camera is None:
        raise SessionError("a reference image needs its reference camera: pick the camera that sees the body as "
                           "the photo does (Subject panel)")
    reference = None
    if image is not None or props.reference_camera is not None:
        if not start <= props.reference_frame <= end:
            raise SessionError(f"reference frame {props.reference_frame} is outside the frame range {start}-{end}")
        reference = props.reference_frame - start
    camera = None
    if props.reference_camera is not None:
        current = scene.frame_current
        scene.frame_set(props.reference_frame)
        try:
            camera = camera_json(scene, props.reference_camera)
        finally:
            scene.frame_set(current)
    motion = rig_export.export_motion(scene, props.armature, start, end, binding)
    spec = {"motion": motion, "gaussians": int(props.gaussians), "seed": int(props.seed),
            "quality": props.quality, "prior": props.prior or "none",
            "body": str(props.armature.get("ani3dhuman_body", "default"))}
    if camera is not None:
        spec["camera"] = camera
    if reference is not None:
        spec["reference_frame"] = reference
    spec.update(dynamics_spec(props))
    if spec["prior"] != "none":
        spec["sampler"], spec["sampler_settings"] = sampler_spec(props)
    return spec, image


def dynamics_spec(props) -> dict:
    """``dynamics``, ``cloth_preset`` and the ``garment`` override of the job from the Clothing Dynamics panel."""
    spec = {"dynamics": "auto" if props.clothing_dynamics else "none", "cloth_preset": props.cloth_preset}
    if props.garment != "auto":
        spec["garment"] = {"type": props.garment}
    return spec


def sampler_spec(props) -> tuple[str, dict]:
    """The sampler preset and, when overridden in the panel, every value of it (``JobSpec.sampler_settings``)."""
    if not props.override_sampler:
        return props.sampler, {}
    gamma = props.sampler_gamma if props.sampler_gamma != "value" else round(float(props.sampler_gamma_value), 6)
    values = {"steps": int(props.sampler_steps), "strength": round(float(props.sampler_strength), 6),
              "shift": round(float(props.sampler_shift), 6), "guidance": round(float(props.sampler_guidance), 6),
              "guidance_schedule": props.sampler_guidance_schedule, "gamma": gamma}
    if props.sampler_cfg >= 1.0:
        values["cfg"] = round(float(props.sampler_cfg), 6)
    return props.sampler, values


# ---------------------------------------------------------------------------------------------------------
# The job state machine

@dataclass
class Job:
    id: str
    endpoint: str
    scene_name: str
    frame_start: int
    results_root: Path
    state: str = "queued"
    next_status: float = 0.0
    failures: int = 0
    download_next: int = 0
    download_total: int | None = None
    download_dir: Path | None = None
    result_dir: Path | None = None
    result_json: dict = field(default_factory=dict)
    object_name: str | None = None
    error: str | None = None
    events: list = field(default_factory=list)  # (state, stage, fraction) of every progress/status seen


_JOB: Job | None = None


def active_job() -> Job | None:
    return _JOB


def start_job(context, props, results_root: Path) -> Job:
    """Validate inputs, export the motion and submit the job (the only blocking step: one short request)."""
    global _JOB
    if _JOB is not None and _JOB.state not in ("imported", "failed", "cancelled", "interrupted", "lost"):
        raise SessionError(f"job {_JOB.id} is still {_JOB.state}: cancel it or wait for it to finish")
    scene = context.scene
    spec, image = build_spec(scene, props)
    connect(props, timeout_s=3.0)  # fail fast (and clearly) when no backend is listening
    c = get_client(props.endpoint)
    try:
        job_id = c.submit(spec, image=image, timeout_s=15.0)
    except client.ServiceTimeout:
        props.connected = False
        props.connection_status = "not reachable"
        raise _unreachable(props.endpoint) from None
    except client.ServiceError as exc:
        raise SessionError(f"backend rejected the job: {exc}") from None
    start = props.frame_range(scene)[0]
    _JOB = Job(id=job_id, endpoint=props.endpoint, scene_name=scene.name, frame_start=start,
               results_root=Path(results_root))
    props.job_id, props.job_state, props.stage, props.progress = job_id, "queued", "", 0.0
    props.eta_s, props.message, props.error = -1.0, "queued", ""
    props.connected = True
    return _JOB


def cancel_job(props) -> bool:
    job = _JOB
    if job is None or job.state in ("imported", "failed", "cancelled", "interrupted", "lost"):
        raise SessionError("no running job to cancel")
    try:
        get_client(job.endpoint).cancel(job.id, timeout_s=5.0)
    except client.ServiceTimeout:
        raise _unreachable(job.endpoint) from None
    except client.ServiceError as exc:
        raise SessionError(f"cancel failed: {exc}") from None
    props.message = "cancel requested"
    return True


def _apply(props, fields: dict, job: Job | None = None) -> None:
    if job is not None:
        job.events.append((fields.get("state"), fields.get("stage"), fields.get("fraction")))
        del job.events[:-1000]
    if fields.get("state"):
        props.job_state = str(fields["state"])
    if fields.get("stage"):
        props.stage = str(fields["stage"])
    if fields.get("fraction") is not None:
        props.progress = min(max(float(fields["fraction"]), 0.0), 1.0)
    eta = fields.get("eta_s")
    props.eta_s = float(eta) if eta is not None else -1.0
    if fields.get("message"):
        props.message = str(fields["message"])[:500]


def poll_backend(context) -> float | None:
    """One step of the active job. Returns the delay until the next step, or None when there is nothing left
    to do (no job, finished, failed). Never raises for backend problems: they end up in ``props.error``."""
    import bpy

    job = _JOB
    if job is None or job.state in ("imported", "failed", "cancelled", "interrupted", "lost"):
        return None
    scene = bpy.data.scenes.get(job.scene_name)
    if scene is None:
        job.state, job.error = "lost", f"scene '{job.scene_name}' was removed"
        return None
    props = scene.ani3dhuman
    c = get_client(job.endpoint)
    try:
        if job.state in ("queued", "running"):
            _step_running(job, c, props)
        if job.state == "done":
            _step_download(job, c, props)
        if job.state == "downloaded":
            _step_import(job, context, scene, props)
    except (client.ServiceError, splat_import.ResultError, OSError, ValueError) as exc:
        job.state, job.error = "failed", str(exc)
    except Exception as exc:  # e.g. zmq.ZMQError: end the job with a message instead of a dead timer
        log.exception("Ani3DHuman: polling job %s failed", job.id)
        job.state, job.error = "failed", f"internal error ({type(exc).__name__}: {exc})"
    if job.error:
        props.job_state, props.error = job.state, job.error
        props.message = job.error[:500]
    _redraw(context)
    if job.state in ("imported", "failed", "cancelled", "interrupted", "lost"):
        return None
    return POLL_INTERVAL_S


PREVIEW_IMAGE = "Ani3DHuman Preview"


def show_preview(png: bytes):
    """Put a progress preview (PNG bytes from the backend) into the image ``Ani3DHuman Preview``."""
    import tempfile

    import bpy

    if not png.startswith(b"\x89PNG"):
        return None
    path = Path(tempfile.gettempdir()) / f"ani3dhuman_preview_{os.getpid()}.png"
    path.write_bytes(png)
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is None:
        image = bpy.data.images.load(str(path))
        image.name = PREVIEW_IMAGE
    else:
        image.filepath = str(path)
        image.reload()
    image.pack()  # keep it in the .blend: the temporary file is overwritten by the next preview
    return image


def _drain_progress(job: Job, c: client.Client, props) -> None:
    for message in c.progress(0.0):
        if message.get("job") != job.id:
            continue
        _apply(props, message.header, job)
        png = message.arrays.get("preview_png")
        if png is not None:
            try:
                show_preview(bytes(png))
            except (OSError, RuntimeError) as exc:  # a bad preview never stops the job
                log.warning("Ani3DHuman: preview not shown: %s", exc)
        if message.get("state") in protocol.FINAL_STATES:
            job.next_status = 0.0  # confirm with a status request right away


def _step_running(job: Job, c: client.Client, props) -> None:
    _drain_progress(job, c, props)
    if time.monotonic() < job.next_status:
        return
    try:
        status = c.status(job.id, timeout_s=2.0)
        _drain_progress(job, c, props)  # messages that arrived before the reply are older than it
    except client.ServiceTimeout:
        job.failures += 1
        props.message = f"backend not answering ({job.failures}/{MAX_STATUS_FAILURES})"
        if job.failures >= MAX_STATUS_FAILURES:
            job.state, job.error = "lost", _unreachable(job.endpoint).args[0]
        job.next_status = time.monotonic() + STATUS_INTERVAL_S
        return
    job.failures = 0
    job.next_status = time.monotonic() + STATUS_INTERVAL_S
    _apply(props, status, job)
    state = status.get("state")
    if state == "done":
        job.state = "done"
        props.message = "downloading result"
    elif state in ("failed", "cancelled", "interrupted"):
        job.state = state
        job.error = {"failed": f"job failed: {status.get('error') or status.get('message') or 'no reason given'}",
                     "cancelled": "job cancelled", "interrupted": "the backend stopped while the job ran"}[state]
    else:
        job.state = state or job.state


def _step_download(job: Job, c: client.Client, props) -> None:
    if job.download_dir is None:
        job.results_root.mkdir(parents=True, exist_ok=True)
        job.download_dir = job.results_root / f".{job.id}.tmp-{os.getpid()}"
        shutil.rmtree(job.download_dir, ignore_errors=True)
        (job.download_dir / "frames").mkdir(parents=True)
    try:
        header, frames = c.result_chunk(job.id, job.download_next, DOWNLOAD_CHUNK, timeout_s=60.0)
    except client.ServiceTimeout:
        job.failures += 1
        if job.failures >= MAX_STATUS_FAILURES:
            job.state, job.error = "lost", _unreachable(job.endpoint).args[0]
        return
    job.failures = 0
    job.download_total = int(header["total"])
    job.result_json = header.get("result") or {}
    for index, arrays in sorted(frames.items()):
        ply_io.write_3dgs_ply(splat_import.frame_path(job.download_dir, int(index)), arrays["means"],
                                    arrays["quats"], arrays["log_scales"], arrays["opacity_logits"], arrays["sh"])
    stop = int(header["stop"])
    if stop <= job.download_next and stop < job.download_total:
        raise splat_import.ResultError(f"result download stalled at frame {stop} of {job.download_total}")
    job.download_next = stop
    props.stage = "download"
    props.progress = job.download_next / max(job.download_total, 1)
    props.message = f"downloading frame {job.download_next}/{job.download_total}"
    if job.download_next >= job.download_total:
        (job.download_dir / "result.json").write_text(json.dumps(job.result_json, indent=1))
        final = job.results_root / job.id
        if final.exists():
            shutil.rmtree(final)
        os.replace(job.download_dir, final)
        job.result_dir = final
        job.state = "downloaded"
        props.result_dir = str(final)


def _step_import(job: Job, context, scene, props) -> None:
    obj = splat_import.import_result(context, job.result_dir, job.frame_start, name=f"Ani3DHuman {job.id}")
    job.object_name = obj.name
    job.state = "imported"
    props.result_object = obj
    props.job_state = "imported"
    props.stage, props.progress, props.message = "done", 1.0, f"imported as '{obj.name}'"


def _redraw(context) -> None:
    wm = getattr(context, "window_manager", None)
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def run_until_done(context, timeout_s: float = 600.0, on_step=None) -> Job:
    """Step the active job until it is imported or fails (scripts, tests and background mode)."""
    deadline = time.monotonic() + timeout_s
    while True:
        delay = poll_backend(context)
        if on_step is not None:
            on_step(_JOB)
        if delay is None:
            return _JOB
        if time.monotonic() > deadline:
            raise SessionError(f"job {_JOB.id} not finished within {timeout_s:.0f} s")
        time.sleep(delay)


def reset() -> None:
    """Forget the active job (after unregistering)."""
    global _JOB
    _JOB = None
