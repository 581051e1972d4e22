"""Client library for the compute service (stdlib + numpy + zmq only; no torch, no bpy).

The add-on runs this very file, vendored as ``blender_addon/wire/client.py`` (``scripts/vendor_wire.py``), which
is why the protocol is imported relatively: ``backend.wire.client`` and ``blender_addon.wire.client`` each use
their own package's ``protocol`` module.

Two ways to use it:

- Scripts: blocking calls with a timeout — ``Client(endpoint).hello()``, ``submit(...)``, ``wait(job)``,
  ``fetch_result(job)``. Every call gives up after ``timeout_s`` with ``ServiceTimeout``.
- Event loops (Blender timers): ``send(action, fields)`` returns a request id at once, ``poll(0)`` returns
  whatever replies and progress messages have arrived, never blocking longer than asked.

A DEALER socket reconnects by itself when the server restarts; after a timeout the socket is also thrown
away and recreated, so a request queued to a dead server is never delivered late.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from .protocol import (FINAL_STATES, MOTION_FIELDS, Message, ProtocolError, decode, new_id, request,
                       split_frames)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


class ServiceError(RuntimeError):
    """The server answered with ``status: error``; the text is the server's message."""


class ServiceTimeout(TimeoutError):
    """No reply in time: the server is down, busy, or refused our key (unauthorised clients get nothing)."""


@dataclass(frozen=True)
class CurveKeys:
    """CurveZMQ keys of a client: the server's public key and this client's key pair (Z85 bytes)."""

    server_public: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def from_files(cls, server_public_file: str | os.PathLike,
                   client_secret_file: str | os.PathLike) -> CurveKeys:
        """Load keys from ZeroMQ certificate files (``zmq.auth.create_certificates`` writes them)."""
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(str(server_public_file))
        client_public, client_secret = zmq.auth.load_certificate(str(client_secret_file))
        if client_secret is None:
            raise ValueError(f"{client_secret_file}: no secret key in this certificate (use the .key_secret file)")
        return cls(server_public, client_public, client_secret)


class Client:
    """A DEALER connection to the service.

    Args:
        endpoint: Server endpoint, e.g. ``tcp://127.0.0.1:5555``.
        timeout_s: Default timeout of blocking calls, seconds.
        curve: Client CurveZMQ keys when the server requires them.
        context: ZeroMQ context (default: the process-wide instance).
        max_progress: Progress messages kept for ``progress()`` while blocking calls run (oldest dropped).
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout_s: float = 10.0,
                 curve: CurveKeys | None = None, context: zmq.Context | None = None, max_progress: int = 1000):
        self.endpoint = endpoint
        self.timeout_s = float(timeout_s)
        self.curve = curve
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None
        self._progress: deque[Message] = deque(maxlen=max_progress)
        self._replies: dict[str, Message] = {}
        self._pending: set[str] = set()
        self._connect()

    # -- connection
    def _connect(self) -> None:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer that is not connected yet
        if self.curve is not None:
            sock.curve_serverkey = self.curve.server_public
            sock.curve_publickey = self.curve.client_public
            sock.curve_secretkey = self.curve.client_secret
        sock.connect(self.endpoint)
        self._socket = sock

    def reconnect(self) -> None:
        """Drop the socket (and anything queued on it) and connect a fresh one."""
        if self._socket is not None:
            self._socket.close(linger=0)
        self._pending.clear()
        self._replies.clear()
        self._connect()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- low level, non-blocking
    def send(self, action: str, fields: Mapping[str, Any] | None = None,
             arrays: Mapping[str, np.ndarray] | None = None) -> str:
        """Send a request without waiting; returns its id (the reply comes through ``poll``).

        Raises:
            ServiceTimeout: the message could not even be queued (no connection to the server yet).
        """
        if self._socket is None:
            self._connect()
        request_id = new_id()
        frames = request(action, fields, arrays, request_id=request_id)
        try:
            self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            raise ServiceTimeout(f"cannot send to {self.endpoint}: not connected (is the server running?)") from None
        self._pending.add(request_id)
        return request_id

    def poll(self, timeout_s: float = 0.0) -> list[Message]:
        """Receive every message that is ready, waiting at most ``timeout_s`` for the first one.

        Returns:
            Decoded replies and progress messages, in arrival order. Messages that break the protocol are
            dropped (a wrong-version server is reported by ``hello``).
        """
        if self._socket is None:
            self._connect()
        out: list[Message] = []
        wait_ms = max(int(timeout_s * 1000), 0)
        while self._socket.poll(wait_ms, zmq.POLLIN):
            wait_ms = 0
            frames = self._socket.recv_multipart(copy=False)
            try:
                out.append(decode(frames))
            except ProtocolError:
                continue
        return out

    def progress(self, timeout_s: float = 0.0) -> list[Message]:
        """Progress messages received so far (including those seen during blocking calls), oldest first."""
        for message in self.poll(timeout_s):
            self._route(message)
        items = list(self._progress)
        self._progress.clear()
        return items

    def take_reply(self, request_id: str) -> Message | None:
        """The reply to ``request_id`` if it has arrived (for event loops that used ``send``)."""
        for message in self.poll(0):
            self._route(message)
        return self._replies.pop(request_id, None)

    def _route(self, message: Message) -> None:
        if message.type == "progress":
            self._progress.append(message)
        elif message.id in self._pending:
            self._pending.discard(message.id)
            self._replies[message.id] = message
        # anything else is a late reply to a request we gave up on: dropped

    # -- blocking with timeout
    def call(self, action: str, fields: Mapping[str, Any] | None = None,
             arrays: Mapping[str, np.ndarray] | None = None, *, timeout_s: float | None = None) -> Message:
        """Send a request and wait for its reply.

        Raises:
            ServiceTimeout: no reply within the timeout (the socket is then recreated).
            ServiceError: the server replied with an error.
        """
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        deadline = time.monotonic() + timeout
        try:
            request_id = self.send(action, fields, arrays)
        except ServiceTimeout:
            # IMMEDIATE refuses to queue before the connection is up: give it until the deadline.
            request_id = None
            while request_id is None:
                if time.monotonic() >= deadline:
                    self.reconnect()
                    raise ServiceTimeout(f"{action}: no connection to {self.endpoint} within {timeout:.1f} s")
                time.sleep(0.01)
                try:
                    request_id = self.send(action, fields, arrays)
                except ServiceTimeout:
                    pass
        while True:
            reply = self._replies.pop(request_id, None)
            if reply is not None:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.reconnect()
                raise ServiceTimeout(f"{action}: no reply from {self.endpoint} within {timeout:.1f} s")
            for message in self.poll(min(remaining, 0.1)):
                self._route(message)
        if reply.get("status") != "ok":
            raise ServiceError(f"{action}: {reply.get('message', 'error without a message')}")
        return reply

    # -- actions
    def hello(self, **kw: Any) -> dict:
        """Server versions, devices, body models, priors and limits."""
        return self.call("hello", {"client": "ani3dhuman.client"}, **kw).header

    def body_model(self, name: str = "default", betas: np.ndarray | None = None, **kw: Any) -> Message:
        """Rest mesh and rig of a body model: arrays ``rest_vertices [V,3]``, ``faces [T,3]``,
        ``rest_joints [J,3]``, ``skin_weights [V,J]``; header ``parents``, ``joint_names``, ``up`` ("Y")."""
        arrays = {"betas": np.asarray(betas, np.float32)} if betas is not None else None
        return self.call("body_model", {"name": name}, arrays, **kw)

    def submit(self, spec: Mapping[str, Any], image: bytes | str | os.PathLike | None = None,
               **kw: Any) -> str:
        """Queue a job; returns its id. This client receives the job's progress messages.

        Args:
            spec: Job settings as for ``JobSpec.from_dict``; ``spec["motion"]`` is a dict with numpy arrays
                ``root_orient [F,3]``, ``pose_body [F,63]``, optional ``pose_hand [F,90]``, ``trans [F,3]``,
                ``betas [S]`` and ``fps`` (or ``mocap_frame_rate``; a ``Motion`` works too). ``image`` in ``spec``
                is ignored: pass the bytes or a path here.
            image: Reference image (PNG/JPEG bytes or a file path), or None.
        """
        fields = {k: v for k, v in spec.items() if k not in ("motion", "image") and v is not None}
        motion = spec["motion"]
        if hasattr(motion, "arrays"):  # a backend.motion.Motion
            motion = motion.arrays()
        arrays = {f"motion.{name}": np.asarray(motion[name]) for name in MOTION_FIELDS
                  if motion.get(name) is not None}
        fps = next((motion[k] for k in ("fps", "mocap_frame_rate", "mocap_framerate") if k in motion), None)
        if fps is None:
            raise ValueError("spec['motion']: expected 'fps' (or 'mocap_frame_rate')")
        fields["motion"] = {"fps": float(np.asarray(fps).reshape(-1)[0])}
        if image is not None:
            data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
            arrays["image"] = np.frombuffer(bytes(data), np.uint8)
        return self.call("submit", {"spec": fields}, arrays, **kw).header["job"]

    def status(self, job: str, *, watch: bool = False, **kw: Any) -> dict:
        """State of a job; ``watch=True`` also sends this client the job's progress from now on."""
        return self.call("status", {"job": job, "watch": watch}, **kw).header

    def jobs(self, **kw: Any) -> list[dict]:
        """All jobs the server knows, oldest first."""
        return self.call("list", **kw).header["jobs"]

    def cancel(self, job: str, **kw: Any) -> dict:
        return self.call("cancel", {"job": job}, **kw).header

    def shutdown(self, **kw: Any) -> dict:
        return self.call("shutdown", **kw).header

    def result_chunk(self, job: str, start: int = 0, count: int = 8, *, canonical: bool = False,
                     **kw: Any) -> tuple[dict, dict]:
        """One chunk of a finished job's frames.

        Returns:
            (header with ``result`` (result.json), ``start``, ``stop``, ``total``; ``{frame index: {field:
            array}}`` with ``means [N,3]``, ``quats [N,4]``, ``log_scales [N,3]``, ``opacity_logits [N]``,
            ``sh [N,K,3]``). With ``canonical=True`` the header has ``canonical`` and the arrays
            ``canonical.<field>``.
        """
        reply = self.call("result", {"job": job, "start": start, "count": count, "canonical": canonical}, **kw)
        return reply.header, {**split_frames(reply.arrays),
                              **({"canonical": {k.split(".", 1)[1]: v for k, v in reply.arrays.items()
                                                if k.startswith("canonical.")}} if canonical else {})}

    def fetch_result(self, job: str, *, frames_per_chunk: int = 16, **kw: Any) -> Iterator[tuple[int, dict]]:
        """Yield ``(frame index, {field: array})`` for every frame of a finished job, chunk by chunk."""
        start, total = 0, None
        while total is None or start < total:
            header, frames = self.result_chunk(job, start, frames_per_chunk, **kw)
            total = header["total"]
            yield from frames.items()
            if header["stop"] <= start:
                raise ServiceError(f"result: server returned no frames from {start}")
            start = header["stop"]

    def wait(self, job: str, *, timeout_s: float = 600.0,
             on_progress: Callable[[Message], None] | None = None, poll_s: float = 1.0) -> dict:
        """Wait until a job reaches a final state (done, failed, cancelled, interrupted); returns its status.

        Progress messages go to ``on_progress``; the status is also polled every ``poll_s`` seconds, so a
        lost progress message (or a server restart) cannot hang the wait.

        Raises:
            ServiceTimeout: not final within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(job)
            if status["state"] in FINAL_STATES:
                return status
            until = min(time.monotonic() + poll_s, deadline)
            while time.monotonic() < until:
                for message in self.progress(min(0.05, max(until - time.monotonic(), 0))):
                    if on_progress is not None:
                        on_progress(message)
                    if message.get("job") == job and message.get("state") in FINAL_STATES:
                        until = 0.0
            if time.monotonic() >= deadline:
                raise ServiceTimeout(f"job {job}: not finished within {timeout_s:.0f} s")
