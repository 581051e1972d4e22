"""Wire protocol between the compute service and its clients (stdlib + numpy + zmq only).

The add-on runs this very file, vendored as ``blender_addon/wire/protocol.py`` (``scripts/vendor_wire.py``), so
this module must not import torch, bpy or anything from ``backend``.

A message is a ZeroMQ multipart ``[header, *buffers]``. The header is UTF-8 JSON::

    {"type": "<action>_request" | "<action>_reply" | "progress",
     "protocol": 1, "id": "<request id>",
     "arrays": [{"name": ..., "dtype": "float32", "shape": [F, 3]}, ...],   # one per buffer, in order
     ...action fields...}

Replies also carry ``"status": "ok" | "error"`` and, on error, a human-readable ``"message"``. Buffers are raw
little-endian C-order array bytes. There is no pickle anywhere: a header is only JSON, a buffer only numbers.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1

ACTIONS = ("hello", "body_model", "submit", "status", "list", "cancel", "result", "shutdown")

# dtypes allowed on the wire (never "object"); buffers are always little-endian.
DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
          "float16", "float32", "float64")

MAX_HEADER_BYTES = 1 << 20
MAX_ARRAYS = 10_000
MAX_NDIM = 8
MAX_ID_CHARS = 128
MAX_NAME_CHARS = 200

# Job states as the service reports them. "interrupted": the server stopped while the job ran.
JOB_STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINAL_STATES = ("done", "failed", "cancelled", "interrupted")

# Per-frame Gaussian arrays in a result reply, named ``frame.<index>.<field>``.
GAUSSIAN_FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh")
# Motion arrays in a submit request, named ``motion.<field>``.
MOTION_FIELDS = ("root_orient", "pose_body", "pose_hand", "trans", "betas")

_TYPE_RE = re.compile(r"^(?:(?P<action>[a-z_]+)_(?P<kind>request|reply)|progress)$")


class ProtocolError(ValueError):
    """A message that breaks the wire contract; the text names the field, the expected and the actual value."""


@dataclass(frozen=True)
class Message:
    """One decoded message.

    Attributes:
        header: The JSON header (a dict), including ``type``, ``protocol``, ``id`` and ``arrays``.
        arrays: Named arrays decoded from the buffers (read-only views when decoded from the wire).
    """

    header: dict
    arrays: dict = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.header["type"]

    @property
    def id(self) -> str | None:
        return self.header.get("id")

    @property
    def action(self) -> str | None:
        """The action of a request or reply (``"submit"`` for ``submit_request``); None for progress."""
        match = _TYPE_RE.match(self.header.get("type", ""))
        return match.group("action") if match else None

    @property
    def ok(self) -> bool:
        return self.header.get("status") == "ok"

    def get(self, name: str, default: Any = None) -> Any:
        return self.header.get(name, default)


def new_id() -> str:
    """A fresh random request id."""
    return uuid.uuid4().hex


def _dtype_name(array: np.ndarray) -> str:
    name = array.dtype.name
    if name not in DTYPES:
        raise ProtocolError(f"array dtype: expected one of {', '.join(DTYPES)}, got {array.dtype}")
    return name


def encode(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> list:
    """Encode a header and named arrays into multipart frames ``[header bytes, *buffers]``.

    Args:
        header: JSON-serialisable fields; ``type``, ``protocol`` and ``id`` are required. ``arrays`` is filled
            in here from ``arrays``.
        arrays: Named numpy arrays (any shape; dtypes from ``DTYPES``). Sent without copying when already
            little-endian and C-contiguous.

    Returns:
        Frames for ``socket.send_multipart(frames, copy=False)``.
    """
    header = dict(header)
    specs, buffers = [], []
    for name, array in (arrays or {}).items():
        array = np.asarray(array)
        dtype = _dtype_name(array)
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        specs.append({"name": str(name), "dtype": dtype, "shape": [int(n) for n in array.shape]})
        buffers.append(memoryview(array.reshape(-1).view(np.uint8)) if array.size else b"")
    header["arrays"] = specs
    return [json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8"), *buffers]


def _frame_bytes(frame: Any) -> memoryview:
    # zmq.Frame (copy=False), bytes and memoryviews all expose the buffer protocol.
    buffer = getattr(frame, "buffer", frame)
    return memoryview(buffer).cast("B")


def peek_id(frames: Sequence[Any]) -> str | None:
    """Best-effort request id of a (possibly malformed) message, so an error reply can name it."""
    try:
        header = json.loads(bytes(_frame_bytes(frames[0])[:MAX_HEADER_BYTES]).decode("utf-8"))
        value = header.get("id") if isinstance(header, dict) else None
        return value if isinstance(value, str) and len(value) <= MAX_ID_CHARS else None
    except Exception:  # anything unreadable simply has no id
        return None


def decode(frames: Sequence[Any], *, max_bytes: int | None = None) -> Message:
    """Decode and validate multipart frames into a ``Message``.

    Args:
        frames: ``[header, *buffers]`` as bytes, memoryviews or ``zmq.Frame``.
        max_bytes: Refuse messages whose frames add up to more than this.

    Raises:
        ProtocolError: any violation of the wire contract, naming the field.
    """
    if not frames:
        raise ProtocolError("message: expected at least a header frame, got 0 frames")
    views = [_frame_bytes(f) for f in frames]
    total = sum(v.nbytes for v in views)
    if max_bytes is not None and total > max_bytes:
        raise ProtocolError(f"message size: expected at most {max_bytes} bytes, got {total}")
    if views[0].nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(f"header: expected at most {MAX_HEADER_BYTES} bytes, got {views[0].nbytes}")
    try:
        header = json.loads(bytes(views[0]).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"header: expected UTF-8 JSON, got unreadable bytes ({exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header: expected a JSON object, got {type(header).__name__}")
    version = header.get("protocol")
    if type(version) is not int:
        raise ProtocolError(f"field 'protocol': expected integer {PROTOCOL_VERSION}, got {version!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"field 'protocol': this side speaks version {PROTOCOL_VERSION}, got {version}")
    kind = header.get("type")
    if not isinstance(kind, str) or not _TYPE_RE.match(kind):
        raise ProtocolError(f"field 'type': expected '<action>_request', '<action>_reply' or 'progress', "
                            f"got {_short(kind)}")
    ident = header.get("id")
    if not isinstance(ident, str) or not 0 < len(ident) <= MAX_ID_CHARS:
        raise ProtocolError(f"field 'id': expected a string of 1..{MAX_ID_CHARS} characters, got {_short(ident)}")
    specs = header.get("arrays", [])
    if not isinstance(specs, list):
        raise ProtocolError(f"field 'arrays': expected a list, got {type(specs).__name__}")
    if len(specs) > MAX_ARRAYS:
        raise ProtocolError(f"field 'arrays': expected at most {MAX_ARRAYS} entries, got {len(specs)}")
    if len(specs) != len(views) - 1:
        raise ProtocolError(f"field 'arrays': lists {len(specs)} arrays but the message has "
                            f"{len(views) - 1} buffers")
    arrays = {}
    for index, (spec, view) in enumerate(zip(specs, views[1:])):
        name, array = _decode_array(index, spec, view)
        if name in arrays:
            raise ProtocolError(f"field 'arrays[{index}].name': duplicate name {name!r}")
        arrays[name] = array
    return Message(header, arrays)


def _reject_constant(token: str) -> None:
    raise ValueError(f"non-finite number {token}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _decode_array(index: int, spec: Any, view: memoryview) -> tuple[str, np.ndarray]:
    where = f"arrays[{index}]"
    if not isinstance(spec, dict):
        raise ProtocolError(f"field '{where}': expected an object {{name, dtype, shape}}, got {_short(spec)}")
    name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise ProtocolError(f"field '{where}.name': expected a string of 1..{MAX_NAME_CHARS} characters, "
                            f"got {_short(name)}")
    if dtype not in DTYPES:
        raise ProtocolError(f"field '{where}.dtype' ({name}): expected one of {', '.join(DTYPES)}, "
                            f"got {_short(dtype)}")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise ProtocolError(f"field '{where}.shape' ({name}): expected a list of at most {MAX_NDIM} "
                            f"non-negative integers, got {_short(shape)}")
    dt = np.dtype(dtype).newbyteorder("<")
    count = math.prod(shape)
    if count * dt.itemsize != view.nbytes:
        raise ProtocolError(f"array '{name}': shape {shape} of {dtype} needs {count * dt.itemsize} bytes, "
                            f"buffer has {view.nbytes}")
    array = np.frombuffer(view, dtype=dt, count=count).reshape(shape)
    return name, array


# ---------------------------------------------------------------------------------------------------------
# Building messages


def request(action: str, fields: Mapping[str, Any] | None = None,
            arrays: Mapping[str, np.ndarray] | None = None, *, request_id: str | None = None) -> list:
    """Frames of a ``<action>_request`` with ``fields`` in the header."""
    if action not in ACTIONS:
        raise ProtocolError(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
    header = {**(fields or {}), "type": f"{action}_request", "protocol": PROTOCOL_VERSION,
              "id": request_id or new_id()}
    return encode(header, arrays)


def reply(action: str, request_id: str | None, fields: Mapping[str, Any] | None = None,
          arrays: Mapping[str, np.ndarray] | None = None) -> list:
    """Frames of a successful ``<action>_reply``."""
    header = {**(fields or {}), "type": f"{action}_reply", "protocol": PROTOCOL_VERSION,
              "id": request_id or "unknown", "status": "ok"}
    return encode(header, arrays)


def error_reply(action: str | None, request_id: str | None, message: str) -> list:
    """Frames of an error reply; ``action`` None when the request was unreadable (type ``error_reply``)."""
    header = {"type": f"{action or 'error'}_reply", "protocol": PROTOCOL_VERSION,
              "id": request_id or "unknown", "status": "error", "message": str(message)}
    return encode(header)


def progress(job: str, fields: Mapping[str, Any], preview_png: bytes | None = None) -> list:
    """Frames of a pushed ``progress`` message for ``job`` (optional PNG preview as a uint8 buffer)."""
    header = {**fields, "type": "progress", "protocol": PROTOCOL_VERSION, "id": job, "job": job}
    arrays = {"preview_png": np.frombuffer(preview_png, np.uint8)} if preview_png else None
    return encode(header, arrays)


# ---------------------------------------------------------------------------------------------------------
# Field access with errors that name the field


_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,),
          "list": (list,)}


def field_value(header: Mapping[str, Any], name: str, kind: str, *, default: Any = ...,
                minimum: float | None = None, maximum: float | None = None,
                choices: Sequence[Any] | None = None) -> Any:
    """Read one header field, checking its JSON type, range and allowed values.

    Args:
        header: The message header.
        name: Field name (reported in errors).
        kind: One of ``int``, ``float``, ``str``, ``bool``, ``dict``, ``list``.
        default: Value when absent; absent and no default raises.
        minimum, maximum: Inclusive numeric (or string length) bounds.
        choices: Allowed values.

    Raises:
        ProtocolError: missing, wrong type, out of range or not among ``choices``.
    """
    if name not in header or header[name] is None:
        if default is ...:
            raise ProtocolError(f"field '{name}': required, missing")
        return default
    value = header[name]
    ok = isinstance(value, _KINDS[kind]) and not (kind != "bool" and isinstance(value, bool))
    if kind == "float" and ok and not math.isfinite(value):
        ok = False
    if not ok:
        raise ProtocolError(f"field '{name}': expected {kind}, got {_short(value)}")
    if choices is not None and value not in choices:
        raise ProtocolError(f"field '{name}': expected one of {list(choices)}, got {_short(value)}")
    size = len(value) if kind in ("str", "list", "dict") else value
    if minimum is not None and size < minimum:
        raise ProtocolError(f"field '{name}': expected at least {minimum}, got {_short(value)}")
    if maximum is not None and size > maximum:
        raise ProtocolError(f"field '{name}': expected at most {maximum}, got {_short(value)}")
    return float(value) if kind == "float" else value


# ---------------------------------------------------------------------------------------------------------
# Result frames


def frame_arrays(index: int, gaussians: Mapping[str, np.ndarray]) -> dict:
    """Name one frame's Gaussian arrays for a result reply (``frame.<index>.<field>``)."""
    return {f"frame.{index}.{name}": gaussians[name] for name in GAUSSIAN_FIELDS}


def split_frames(arrays: Mapping[str, np.ndarray]) -> dict:
    """Group ``frame.<index>.<field>`` arrays of a result reply into ``{index: {field: array}}``.

    Raises:
        ProtocolError: a frame lacks one of ``GAUSSIAN_FIELDS``.
    """
    frames: dict[int, dict] = {}
    for name, array in arrays.items():
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "frame" and parts[1].isdigit():
            frames.setdefault(int(parts[1]), {})[parts[2]] = array
    for index, fields in frames.items():
        missing = [n for n in GAUSSIAN_FIELDS if n not in fields]
        if missing:
            raise ProtocolError(f"result frame {index}: missing arrays {missing}")
    return dict(sorted(frames.items()))
