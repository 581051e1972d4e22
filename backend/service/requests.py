"""Translation between wire messages and plain data for the service (no sockets, no threads).

Submit validation (every field named in its error), body-model and Gaussian arrays for replies, preview PNGs.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from backend.wire import protocol
from backend.service.jobstore import image_suffix
from backend.wire.protocol import Message, ProtocolError, field_value

if TYPE_CHECKING:
    from backend.service.settings import ServerSettings


def check_submit(message: Message, settings: ServerSettings,
                 priors: tuple[str, ...]) -> tuple[dict, dict, float, bytes | None]:
    """Validate a submit request; returns (JSON settings, motion arrays, fps, image bytes or None).

    Raises:
        ProtocolError: naming the first invalid field or array.
    """
    s = settings
    spec = dict(field_value(message.header, "spec", "dict"))
    motion_fields = field_value(spec, "motion", "dict")
    fps = field_value(motion_fields, "fps", "float", minimum=1e-3, maximum=1000)
    extra = set(motion_fields) - {"fps"}
    if extra:
        raise ProtocolError(f"field 'spec.motion': only 'fps' travels in the header (arrays go in "
                            f"motion.* buffers), got {sorted(extra)}")
    unknown = [n for n in message.arrays if n != "image" and
               not (n.startswith("motion.") and n[7:] in protocol.MOTION_FIELDS)]
    if unknown:
        raise ProtocolError(f"arrays: unexpected {unknown}; expected motion.<{'|'.join(protocol.MOTION_FIELDS)}>"
                            f" and image")
    widths = {"root_orient": 3, "pose_body": 63, "pose_hand": 90, "trans": 3}
    motion: dict[str, np.ndarray] = {}
    frames = None
    for name in protocol.MOTION_FIELDS:
        array = message.arrays.get(f"motion.{name}")
        if array is None:
            if name == "pose_hand":
                continue
            raise ProtocolError(f"array 'motion.{name}': required, missing")
        if array.dtype.kind != "f":
            raise ProtocolError(f"array 'motion.{name}': expected float32 or float64, got {array.dtype}")
        if name == "betas":
            if array.ndim != 1 or not 1 <= array.shape[0] <= 300:
                raise ProtocolError(f"array 'motion.betas': expected shape [S] with 1 <= S <= 300, got "
                                    f"{list(array.shape)}")
        else:
            if array.ndim != 2 or array.shape[1] != widths[name]:
                raise ProtocolError(f"array 'motion.{name}': expected shape [F, {widths[name]}], got "
                                    f"{list(array.shape)}")
            if frames is None:
                frames = array.shape[0]
                if not 1 <= frames <= s.max_frames:
                    raise ProtocolError(f"array 'motion.{name}': expected 1..{s.max_frames} frames, "
                                        f"got {frames}")
            elif array.shape[0] != frames:
                raise ProtocolError(f"array 'motion.{name}': expected {frames} frames like "
                                    f"motion.root_orient, got {array.shape[0]}")
        if not np.isfinite(array).all():
            raise ProtocolError(f"array 'motion.{name}': expected finite values, found NaN or inf")
        motion[name] = np.array(array)  # own the memory: the zmq frame goes away
    field_value(spec, "gaussians", "int", minimum=1, maximum=s.max_gaussians)
    if "body" in spec:  # a name the server offers, never a client-chosen server path
        spec["body"] = s.body_models[field_value(spec, "body", "str", choices=sorted(s.body_models))]
    if "prior" in spec:
        field_value(spec, "prior", "str", choices=list(priors))
    spec.pop("image", None)
    if spec.get("import_gaussians") is not None:
        raise ProtocolError("field 'spec.import_gaussians': not accepted over the wire (a server-side path); "
                            "run `ani3dhuman animate --import-gaussians` on the server instead")
    image = message.arrays.get("image")
    data = None
    if image is not None:
        if image.dtype != np.uint8 or image.ndim != 1 or not 0 < image.shape[0] <= s.max_image_bytes:
            raise ProtocolError(f"array 'image': expected uint8 [nbytes] with 1..{s.max_image_bytes} bytes, "
                                f"got {image.dtype} {list(image.shape)}")
        data = image.tobytes()
        if image_suffix(data) is None:
            raise ProtocolError("array 'image': expected PNG or JPEG bytes, got another format")
        check_image(data)
    spec["motion"] = {"fps": fps}
    return spec, motion, fps, data


def check_image(data: bytes) -> None:
    """Raise ProtocolError (field ``image``) unless Pillow can read ``data``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:  # PIL raises many types for corrupt files
        raise ProtocolError(f"array 'image': not a readable PNG/JPEG ({exc})") from None


def gaussian_arrays(gaussians: Any, with_binding: bool = False) -> dict:
    """Raw parameters of a ``Gaussians`` as numpy arrays for a result reply: ``means [N,3]``, ``quats [N,4]``,
    ``log_scales [N,3]``, ``opacity_logits [N]``, ``sh [N,K,3]`` (+ ``skin_weights [N,J]``, ``part_ids [N]``,
    ``loose [N]`` when ``with_binding`` and present)."""
    out = {name: getattr(gaussians, name).detach().cpu().numpy() for name in protocol.GAUSSIAN_FIELDS}
    if with_binding:
        for name in ("skin_weights", "part_ids", "loose"):
            value = getattr(gaussians, name, None)
            if value is not None:
                out[name] = value.detach().cpu().numpy()
    return out


def body_model_arrays(source: str, betas: np.ndarray | None) -> tuple[dict, dict]:
    """The body_model reply of ``load_body_model(source)`` shaped by ``betas [S]`` (None: mean shape).

    Returns:
        (fields ``parents``, ``joint_names``, ``up`` ("Y": the body's rest frame), ``units``; arrays
        ``rest_vertices [V,3]`` f32, ``faces [T,3]`` i32, ``rest_joints [J,3]`` f32, ``skin_weights [V,J]`` f32).
    """
    import torch

    from backend.body import load_body_model

    model = load_body_model(source)
    with torch.no_grad():
        b = None if betas is None else torch.as_tensor(np.array(betas), dtype=torch.float32)
        vertices = model.rest_vertices(b)
        joints = model.rest_joints(b)

    def host(t: Any, dtype: Any) -> np.ndarray:
        t = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        return np.ascontiguousarray(t, dtype=dtype)

    arrays = {"rest_vertices": host(vertices, np.float32), "faces": host(model.faces, np.int32),
              "rest_joints": host(joints, np.float32), "skin_weights": host(model.skin_weights, np.float32)}
    fields = {"parents": [int(p) for p in model.parents], "joint_names": [str(n) for n in model.joint_names],
              "up": "Y", "units": "m"}
    return fields, arrays


def preview_png(preview: np.ndarray, max_side: int = 160) -> bytes:
    """A small PNG of an RGB(A) uint8 preview [H, W, 3|4], at most ``max_side`` pixels."""
    image = Image.fromarray(np.ascontiguousarray(preview[..., :3], dtype=np.uint8))
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
