"""The compute service: a ZeroMQ ROUTER in front of a job queue (the only module with sockets and threads).

Threads:

- the loop thread (``Server.run``) owns the ROUTER socket: it decodes requests, answers the quick ones
  (hello, submit, status, list, cancel, shutdown) itself and hands slow ones (body_model, result) to a small
  thread pool, so status polls stay fast while results stream out;
- one worker thread per device runs jobs through the same ``backend.stages.animate.animate`` as
  ``ani3dhuman animate``;
- other threads never touch the socket: they put ``(identity, frames)`` into an outbox and wake the loop
  through a socket pair.

Every request gets a reply; a handler exception becomes an error reply. Messages over the size limit are
dropped by ZeroMQ (``MAXMSGSIZE``: the peer is disconnected) or answered with an error by our own check.
Non-loopback endpoints need CurveZMQ: a server key pair and the allowed client public keys (ZAP).
"""

from __future__ import annotations

import concurrent.futures
import logging
import platform
import queue
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zmq

import backend
from backend.core.errors import Cancelled, CapabilityError, InputError
from backend.core.progress import ProgressEvent, ProgressFn
from backend.diffusion import registry
from backend.service.jobstore import FINAL_STATES, JobStore
from backend.service.requests import body_model_arrays, check_submit, gaussian_arrays, preview_png
from backend.farm import RayExecutor, RaySettings
from backend.farm import shutdown as farm_shutdown
from backend.service.runner import ray_runner, run_animate_job, validate_spec
from backend.service.security import AllowedKeys, check_endpoint, load_allowed_clients, load_server_keys
from backend.service.settings import Runner, ServerSettings, detect_devices, detect_priors
from backend.wire import protocol
from backend.wire.protocol import Message, ProtocolError, field_value

log = logging.getLogger(__name__)


@dataclass
class _Job:
    id: str
    state: dict
    cancel: threading.Event = field(default_factory=threading.Event)
    watchers: list = field(default_factory=list)
    last_push: float = 0.0
    last_preview: float = 0.0
    shutdown: bool = False


def _prior_models() -> list[dict]:
    """Which supported priors are present on this machine (as ``ani3dhuman models --json`` prints)."""
    try:
        return registry.status_dicts()
    except Exception as exc:  # a broken cache must not break hello
        log.warning("cannot list prior models: %s", exc)
        return []


# ---------------------------------------------------------------------------------------------------------
# Server


class Server:
    """The service. ``run()`` binds and serves until ``stop()`` or a shutdown request.

    Args:
        settings: Service settings (checked here: a refused endpoint raises ``InputError`` before binding).
        runner: Runs one job (default ``run_animate_job``); tests may pass their own.
        validate: Validates a stored job's settings at submit (default ``validate_spec``).
    """

    SLOW_ACTIONS = frozenset({"body_model", "result"})

    def __init__(self, settings: ServerSettings, runner: Runner | None = None,
                 validate: Callable[[dict], None] | None = None):
        check_endpoint(settings)
        self.settings = settings
        self._curve = None
        if settings.curve_secret_key is not None:
            self._curve = (load_server_keys(Path(settings.curve_secret_key)),
                           load_allowed_clients(Path(settings.curve_allowed_clients)))
        self.store = JobStore(settings.jobs_dir)
        self.devices = settings.devices or detect_devices()
        self.priors = settings.priors if settings.priors is not None else detect_priors()
        self._runner = runner or run_animate_job
        self._ray_started = False
        if settings.ray is not None and runner is None:  # one worker thread per job running on the cluster
            self._runner, cpus, self._ray_started = ray_runner(RaySettings(address=settings.ray, num_cpus=settings.ray_cpus),
                                            RayExecutor(shared_folder=settings.ray_shared_folder))
            self.devices = tuple(f"ray-{i}" for i in range(settings.ray_parallel or cpus))
        self._validate = validate or validate_spec
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()
        self._outbox: queue.Queue[tuple[bytes, list]] = queue.Queue()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._body_cache: dict[tuple, tuple[dict, dict]] = {}
        self._body_lock = threading.Lock()
        self.endpoint: str | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="ani3d-slow")
        self._workers: list[threading.Thread] = []
        self._handlers = {
            "hello": self._hello, "body_model": self._body_model, "submit": self._submit,
            "status": self._status, "list": self._list, "cancel": self._cancel, "result": self._result,
            "shutdown": self._shutdown,
        }

    # -- lifecycle
    def start(self, timeout_s: float = 30.0) -> Server:
        """Run the server in a background thread; returns once bound (``self.endpoint`` is the real one)."""
        errors: list[BaseException] = []

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # reported to the caller of start()
                errors.append(exc)
                self._bound.set()

        self._thread = threading.Thread(target=target, name="ani3d-server", daemon=True)
        self._thread.start()
        if not self._bound.wait(timeout_s):
            raise RuntimeError("server did not start in time")
        if errors:
            raise errors[0]
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving; running jobs are stopped and marked interrupted."""
        self._stop.set()
        self._wake()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def run(self) -> None:
        """Bind, recover the job folders, start the workers and serve until stopped."""
        ctx = zmq.Context.instance()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 1000)
        router.setsockopt(zmq.MAXMSGSIZE, self.settings.max_message_bytes)
        router.setsockopt(zmq.RCVHWM, 1000)
        router.setsockopt(zmq.SNDHWM, 1000)
        auth = None
        try:
            if self._curve is not None:
                from zmq.auth.thread import ThreadAuthenticator

                (public, secret), allowed = self._curve
                auth = ThreadAuthenticator(ctx)
                auth.start()
                auth.configure_curve_callback(domain="ani3dhuman", credentials_provider=AllowedKeys(allowed))
                router.curve_server = True
                router.curve_publickey = public
                router.curve_secretkey = secret
                router.zap_domain = b"ani3dhuman"
            try:
                router.bind(self.settings.endpoint)
            except zmq.ZMQError as exc:
                raise InputError(f"endpoint {self.settings.endpoint}: cannot bind ({exc})") from None
            self.endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
            self._recover()
            self._pool.submit(self._warm_up)
            for device in self.devices:
                worker = threading.Thread(target=self._work, args=(device,), name=f"ani3d-worker-{device}",
                                          daemon=True)
                worker.start()
                self._workers.append(worker)
            log.info("ani3dhuman service on %s (jobs: %s, devices: %s, curve: %s)", self.endpoint,
                     self.store.root, ", ".join(self.devices), "on" if self._curve else "off")
            self._bound.set()
            self._loop(router)
        finally:
            self._stop.set()
            self._shutdown_jobs()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._flush(router)
            router.close(linger=500)
            if auth is not None:
                auth.stop()
            self._wake_r.close()
            self._wake_w.close()
            if self._ray_started:
                farm_shutdown()

    def _warm_up(self) -> None:
        """Scan the prior cache off the loop thread, so the first hello does not pay for it."""
        self._prior_models_cached()

    def _loop(self, router: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        while not self._stop.is_set():
            events = dict(poller.poll(500))
            if self._wake_r.fileno() in events:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
            if router in events:
                for _ in range(100):  # bounded batch, then serve the outbox
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._handle(frames)
            self._flush(router)

    def _flush(self, router: zmq.Socket) -> None:
        while True:
            try:
                identity, frames = self._outbox.get_nowait()
            except queue.Empty:
                return
            try:
                router.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
            except zmq.ZMQError as exc:  # peer gone or its queue full: a client re-asks with status
                log.debug("dropped a message to a peer: %s", exc)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the loop is already awake (or closed)

    def _send(self, identity: bytes, frames: list) -> None:
        self._outbox.put((identity, frames))
        self._wake()

    # -- requests
    def _handle(self, frames: list) -> None:
        identity = frames[0].bytes
        body = frames[1:]
        action = None
        request_id = protocol.peek_id(body) if body else None
        try:
            message = protocol.decode(body, max_bytes=self.settings.max_message_bytes)
            request_id = message.id
            if not message.type.endswith("_request"):
                raise ProtocolError(f"field 'type': expected a request, got {message.type!r}")
            action = message.action
            if action not in self._handlers:
                raise ProtocolError(f"field 'type': unknown action {action!r}; "
                                    f"expected one of {', '.join(protocol.ACTIONS)}")
        except ProtocolError as exc:
            self._send(identity, protocol.error_reply(None, request_id, str(exc)))
            return
        if action in self.SLOW_ACTIONS:
            self._pool.submit(self._answer, identity, action, message)
        else:
            self._answer(identity, action, message)

    def _answer(self, identity: bytes, action: str, message: Message) -> None:
        try:
            fields, arrays = self._handlers[action](message, identity)
            frames = protocol.reply(action, message.id, fields, arrays)
        except (ProtocolError, InputError, CapabilityError, KeyError, FileNotFoundError) as exc:
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            frames = protocol.error_reply(action, message.id, str(text))
        except Exception as exc:  # never a dead server: the client gets the error
            log.exception("%s handler failed", action)
            frames = protocol.error_reply(action, message.id, f"internal error: {type(exc).__name__}: {exc}")
        self._send(identity, frames)

    def _hello(self, message: Message, identity: bytes) -> tuple[dict, None]:
        versions = {"backend": backend.__version__, "python": platform.python_version(), "numpy": np.__version__,
                    "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "torch": torch.__version__}
        s = self.settings
        return {"server": "ani3dhuman", "protocol_version": protocol.PROTOCOL_VERSION, "versions": versions,
                "devices": list(self.devices), "body_models": sorted(s.body_models), "priors": list(self.priors),
                "prior_models": self._prior_models_cached(),
                "curve": self._curve is not None,
                "limits": {"max_message_bytes": s.max_message_bytes, "max_reply_bytes": s.max_reply_bytes,
                           "max_frames": s.max_frames, "max_gaussians": s.max_gaussians,
                           "max_image_bytes": s.max_image_bytes}}, None

    def _prior_models_cached(self) -> list[dict]:
        now = time.monotonic()
        cached = getattr(self, "_prior_cache", None)
        if cached is None or now - cached[0] > 30.0:  # a cache scan, not per hello
            cached = self._prior_cache = (now, _prior_models())
        return cached[1]

    def _body_model(self, message: Message, identity: bytes) -> tuple[dict, dict]:
        name = field_value(message.header, "name", "str", default="default",
                           choices=sorted(self.settings.body_models))
        betas = message.arrays.get("betas")
        if betas is not None:
            if betas.ndim != 1 or not 1 <= betas.shape[0] <= 300 or betas.dtype.kind != "f":
                raise ProtocolError(f"array 'betas': expected float [S] with 1 <= S <= 300, got "
                                    f"{betas.dtype} {list(betas.shape)}")
            if not np.isfinite(betas).all():
                raise ProtocolError("array 'betas': expected finite values")
        key = (name, None if betas is None else betas.astype(np.float64).tobytes())
        with self._body_lock:
            if key not in self._body_cache:
                self._body_cache[key] = body_model_arrays(self.settings.body_models[name], betas)
                while len(self._body_cache) > 8:
                    self._body_cache.pop(next(iter(self._body_cache)))
            fields, arrays = self._body_cache[key]
        return {"name": name, **fields}, arrays

    def _submit(self, message: Message, identity: bytes) -> tuple[dict, None]:
        spec, motion, fps, image = check_submit(message, self.settings, self.priors)
        with self._lock:
            unfinished = sum(1 for j in self._jobs.values() if j.state["state"] not in FINAL_STATES)
        if unfinished >= self.settings.max_queued:
            raise InputError(f"queue full: {unfinished} unfinished jobs (limit {self.settings.max_queued})")
        job_id = self.store.create(spec, motion, fps, image)
        try:
            self._validate(self.store.job_spec_dict(job_id))
        except Exception:
            shutil.rmtree(self.store.job_dir(job_id), ignore_errors=True)
            raise
        job = _Job(job_id, self.store.state(job_id), watchers=[identity])
        with self._lock:
            self._jobs[job_id] = job
            position = self._queue.qsize()
        self._queue.put(job_id)
        log.info("job %s queued (%d frames, %s Gaussians)", job_id, motion["root_orient"].shape[0],
                 spec.get("gaussians"))
        return {"job": job_id, "state": "queued", "position": position}, None

    def _status(self, message: Message, identity: bytes) -> tuple[dict, None]:
        job_id = field_value(message.header, "job", "str", minimum=1, maximum=64)
        watch = field_value(message.header, "watch", "bool", default=False)
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise InputError(f"field 'job': no job {job_id!r}")
            if watch and identity not in job.watchers:
                job.watchers.append(identity)
                del job.watchers[:-16]
            return self._info(job), None

    def _list(self, message: Message, identity: bytes) -> tuple[dict, None]:
        with self._lock:
            return {"jobs": [self._info(job) for job in self._jobs.values()]}, None

    def _cancel(self, message: Message, identity: bytes) -> tuple[dict, None]:
        job_id = field_value(message.header, "job", "str", minimum=1, maximum=64)
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise InputError(f"field 'job': no job {job_id!r}")
            state = job.state["state"]
            if state == "queued":
                job.state = self.store.update_state(job_id, state="cancelled", finished=time.time(),
                                                    message="cancelled before it started")
            elif state == "running":
                job.cancel.set()
            info = self._info(job)
        if state == "queued":
            self._push_state(job)
        info["cancel_requested"] = state in ("queued", "running")
        return info, None

    def _result(self, message: Message, identity: bytes) -> tuple[dict, dict]:
        job_id = field_value(message.header, "job", "str", minimum=1, maximum=64)
        start = field_value(message.header, "start", "int", default=0, minimum=0)
        count = field_value(message.header, "count", "int", default=8, minimum=0, maximum=100_000)
        canonical = field_value(message.header, "canonical", "bool", default=False)
        with self._lock:
            job = self._jobs.get(job_id)
            state = job.state["state"] if job else None
        if job is None:
            raise InputError(f"field 'job': no job {job_id!r}")
        if state != "done" or not self.store.is_complete(job_id):
            raise InputError(f"job {job_id} has no result: state is {state}")
        from backend.gaussians import load_ply

        paths = self.store.frame_paths(job_id)
        total = len(paths)
        if start > total:
            raise ProtocolError(f"field 'start': expected 0..{total}, got {start}")
        arrays: dict[str, np.ndarray] = {}
        size = 0
        if canonical:
            g = load_ply(self.store.output_dir(job_id) / "canonical.ply")
            for name, array in gaussian_arrays(g, with_binding=True).items():
                arrays[f"canonical.{name}"] = array
                size += array.nbytes
        stop = start
        while stop < min(start + count, total):
            frame = gaussian_arrays(load_ply(paths[stop]))
            nbytes = sum(a.nbytes for a in frame.values())
            if stop > start and size + nbytes > self.settings.max_reply_bytes:
                break
            arrays.update(protocol.frame_arrays(stop, frame))
            size += nbytes
            stop += 1
        return {"job": job_id, "result": self.store.result(job_id), "start": start, "stop": stop,
                "total": total}, arrays

    def _shutdown(self, message: Message, identity: bytes) -> tuple[dict, None]:
        log.info("shutdown requested by a client")
        self._stop.set()
        return {"stopping": True}, None

    # -- jobs
    def _info(self, job: _Job) -> dict:
        info = {"job": job.id, **job.state}
        if job.state["state"] == "queued":
            info["position"] = sum(1 for j in self._jobs.values()
                                   if j.state["state"] == "queued" and j.id < job.id)
        return info

    def _recover(self) -> None:
        ids, queued = self.store.recover()
        with self._lock:
            for job_id in ids:
                self._jobs[job_id] = _Job(job_id, self.store.state(job_id))
        for job_id in queued:
            self._queue.put(job_id)
        if ids:
            log.info("jobs folder: %d jobs, %d queued again", len(ids), len(queued))

    def _push(self, job: _Job, fields: dict, preview_png: bytes | None = None) -> None:
        if not job.watchers:
            return
        frames = protocol.progress(job.id, fields, preview_png)
        for identity in list(job.watchers):
            self._send(identity, frames)

    def _push_state(self, job: _Job) -> None:
        s = job.state
        self._push(job, {"state": s["state"], "stage": s.get("stage"), "fraction": s.get("fraction", 0.0),
                         "message": s.get("message", ""), "eta_s": None, "error": s.get("error")})

    def _work(self, device: str) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or job.state["state"] != "queued":
                    continue
                job.state = self.store.update_state(job_id, state="running", started=time.time(),
                                                    message=f"running on {device}")
            self._push_state(job)
            self._run_job(job, device)

    def _run_job(self, job: _Job, device: str) -> None:
        started = time.monotonic()
        error, final = None, "done"
        try:
            spec = self.store.job_spec_dict(job.id)
            self._runner(spec, self.store.output_dir(job.id), self._progress_fn(job), device)
            if not self.store.is_complete(job.id):
                final, error = "failed", "the pipeline returned without a complete output folder"
        except Cancelled:
            final = "interrupted" if job.shutdown else "cancelled"
        except (InputError, CapabilityError) as exc:
            final, error = "failed", str(exc)
        except Exception as exc:  # the job fails, the worker lives on
            log.exception("job %s failed", job.id)
            final, error = "failed", f"{type(exc).__name__}: {exc}"
        if final != "done":
            self.store.discard_partial(job.id)
            if self.store.output_dir(job.id).exists() and final != "failed":
                final = "done"  # it completed before the cancel flag was seen
        message = {"done": f"finished in {time.monotonic() - started:.1f} s", "cancelled": "cancelled",
                   "interrupted": "server stopped", "failed": "failed"}[final]
        # the worker is the only writer of a running job's state: write the file outside the lock
        state = self.store.update_state(job.id, state=final, finished=time.time(), error=error, message=message,
                                        **({"fraction": 1.0} if final == "done" else {}))
        with self._lock:
            job.state = state
        log.info("job %s %s%s", job.id, final, f": {error}" if error else "")
        self._push_state(job)

    def _progress_fn(self, job: _Job) -> ProgressFn:
        interval = self.settings.progress_interval_s

        def report(event: ProgressEvent) -> None:
            if job.cancel.is_set():
                raise Cancelled("cancelled by a client" if not job.shutdown else "server stopping")
            now = time.monotonic()
            stage_changed = event.stage != job.state.get("stage")
            with self._lock:
                job.state = {**job.state, "stage": event.stage, "fraction": float(event.fraction),
                             "message": event.message, "eta_s": event.eta_s}
            if stage_changed:  # persisted per stage, not per event (status reads memory); outside the lock
                self.store.update_state(job.id, stage=event.stage, fraction=float(event.fraction),
                                        message=event.message)
            if not (stage_changed or now - job.last_push >= interval):
                return
            job.last_push = now
            png = None
            if event.preview is not None and now - job.last_preview >= 1.0:
                job.last_preview = now
                png = preview_png(event.preview)
            self._push(job, {"state": "running", "stage": event.stage, "fraction": float(event.fraction),
                             "message": event.message, "eta_s": event.eta_s}, png)

        return report

    def _shutdown_jobs(self) -> None:
        with self._lock:
            running = [j for j in self._jobs.values() if j.state["state"] == "running"]
            for job in running:
                job.shutdown = True
                job.cancel.set()
        for worker in self._workers:
            worker.join(timeout=5.0)


def serve(settings: ServerSettings) -> int:
    """Run the service in this thread until a shutdown request or Ctrl-C; returns an exit code."""
    import signal
    import sys

    # The worker thread runs Python code between torch calls; a 1 ms GIL switch interval (default 5 ms) lets
    # the loop thread answer status polls sooner (measured: p50 9 -> 4 ms, p99 21 -> 17 ms against a
    # Python-bound worker). Process-wide, so only here in the dedicated server process.
    sys.setswitchinterval(0.001)
    server = Server(settings)

    def on_signal(signum: int, frame: Any) -> None:
        server.stop(timeout_s=0)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
    try:
        server.run()
    except KeyboardInterrupt:
        server.stop(timeout_s=0)
    return 0
