"""3DGS PLY files and the point attributes made of them, with numpy only (no bpy): read, write, and the two
attribute layouts the add-on shows a result in.

- ``splat_attributes``: Blender 5.3's native Gaussian splats, exactly as Blender's own ``wm.ply_import`` reads
  the same file (names, types, values), so the cloud renders in every engine.
- ``points_attributes``: Blender 4.5-5.2, which have no splats: a plain point cloud with an emission colour
  (``radiance:base`` as display RGB + opacity), ``opacity``, ``radius`` for the viewport, and the SH rest
  numbered from 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SH_C0 = 0.28209479177387814
RADIUS_FACTOR = 1.5  # viewport radius = factor * mean Gaussian scale (about 1.5 sigma looks like the splat)
MIN_RADIUS = 1e-4
# Properties of the standard 3DGS layout (plus f_rest_*); any other vertex property is carried as a FLOAT.
STANDARD_PROPERTIES = frozenset({"x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                                 "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"})

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3")


class ResultError(ValueError):
    """A result folder or PLY file cannot be imported (names the file and what is wrong)."""


def read_ply_vertices(path: str | os.PathLike) -> np.ndarray:
    """Read the ``vertex`` element of a binary PLY with numpy (no bpy, no plyfile).

    Args:
        path: A binary little/big-endian PLY whose first element is ``vertex`` with scalar properties.

    Returns:
        Structured array with one field per vertex property. [N]

    Raises:
        ResultError: missing file, ASCII PLY, list properties, or a truncated file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header = b""
            while not header.endswith(b"end_header\n"):
                line = fh.readline()
                if not line:
                    raise ResultError(f"{path}: not a PLY file (no end_header)")
                header += line
                if len(header) > 1 << 16:
                    raise ResultError(f"{path}: PLY header too long")
            offset = len(header)
    except FileNotFoundError:
        raise ResultError(f"result frame not found: {path}") from None
    lines = header.decode("ascii", "replace").splitlines()
    if not lines or lines[0].strip() != "ply":
        raise ResultError(f"{path}: not a PLY file")
    fmt, fields, count, element = None, [], None, None
    for line in lines[1:]:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            if element == "vertex":
                break  # later elements (faces) are not needed
            element, count = parts[1], int(parts[2])
            if element != "vertex":
                raise ResultError(f"{path}: first PLY element is '{element}', expected 'vertex'")
        elif parts[0] == "property" and element == "vertex":
            if parts[1] == "list":
                raise ResultError(f"{path}: list property '{parts[-1]}' in the vertex element is not supported")
            if parts[1] not in _PLY_TYPES:
                raise ResultError(f"{path}: unknown PLY property type '{parts[1]}'")
            fields.append((parts[2], _PLY_TYPES[parts[1]]))
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise ResultError(f"{path}: PLY format '{fmt}' not supported (expected binary)")
    if count is None:
        raise ResultError(f"{path}: PLY has no vertex element")
    endian = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(name, endian + code) for name, code in fields])
    data = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    if len(data) != count:
        raise ResultError(f"{path}: truncated PLY ({len(data)} of {count} vertices)")
    return data


def _columns(vertices: np.ndarray, path: str):
    """(property names, ``cols(keys) -> float32 [N, len(keys)]``) of 3DGS PLY records; checks the layout."""
    names = vertices.dtype.names or ()
    missing = [n for n in _REQUIRED if n not in names]
    if missing:
        raise ResultError(f"{path}: not a 3DGS PLY, missing vertex properties {missing}")

    dtypes = {vertices.dtype.fields[n][0] for n in names}
    if len(dtypes) == 1 and next(iter(dtypes)).kind == "f":
        # All properties share one float type (the 3DGS layout): one 2-D view, column slices, no copies.
        table = vertices.view(next(iter(dtypes))).reshape(len(vertices), len(names))
        column = {n: i for i, n in enumerate(names)}

        def cols(keys):
            idx = [column[k] for k in keys]
            if idx == list(range(idx[0], idx[0] + len(idx))):
                return table[:, idx[0]: idx[0] + len(idx)].astype(np.float32)
            return table[:, idx].astype(np.float32)
    else:
        def cols(keys):
            return np.stack([np.asarray(vertices[k], dtype=np.float32) for k in keys], axis=1)

    return names, cols


def splat_attributes(vertices: np.ndarray, path: str = "PLY") -> dict[str, np.ndarray]:
    """3DGS PLY vertex records -> Blender 5.3's Gaussian-splat attributes, as its own ``wm.ply_import`` makes them.

    Returns (float32): ``position [N, 3]``; ``radiance:base [N, 4]`` (FLOAT4: the raw SH DC coefficients
    ``f_dc_0..2`` and the activated opacity); ``scale [N, 3]`` (linear); ``rotation [N, 4]`` (unit quaternion
    w, x, y, z); ``radiance:sh_<k> [N, 3]`` for the higher SH coefficients numbered from 0 (rgb of coefficient
    k + 1); and every non-standard property (``part_id``, ``loose``, skin weights...) as ``[N]``.
    """
    names, cols = _columns(vertices, path)
    opacity = 1.0 / (1.0 + np.exp(-cols(["opacity"])[:, 0]))
    out = {
        "position": cols(["x", "y", "z"]),
        "radiance:base": np.concatenate([cols(["f_dc_0", "f_dc_1", "f_dc_2"]), opacity[:, None]], axis=1),
        "scale": np.exp(cols(["scale_0", "scale_1", "scale_2"])),
        "rotation": _unit_quaternions(cols(["rot_0", "rot_1", "rot_2", "rot_3"])),
    }
    for k, coeffs in enumerate(_sh_rest(names, cols, len(vertices), path)):
        out[f"radiance:sh_{k}"] = coeffs
    for name in names:
        if name not in STANDARD_PROPERTIES and not name.startswith("f_rest_"):
            out[name] = cols([name])[:, 0]
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in out.items()}


def _unit_quaternions(quats: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    bad = norm[:, 0] < 1e-12
    quats = quats / np.where(bad[:, None], 1.0, norm)
    quats[bad] = (1.0, 0.0, 0.0, 0.0)
    return quats


def _sh_rest(names, cols, count: int, path: str) -> list[np.ndarray]:
    """The higher SH coefficients, one rgb array [N, 3] per coefficient (3DGS stores them channel-major)."""
    rest = sorted((n for n in names if n.startswith("f_rest_")), key=lambda n: int(n[7:]))
    if len(rest) % 3:
        raise ResultError(f"{path}: f_rest_* count {len(rest)} is not a multiple of 3")
    per_channel = len(rest) // 3
    if not per_channel:
        return []
    coeffs = cols(rest).reshape(count, 3, per_channel)
    return [coeffs[:, :, k] for k in range(per_channel)]


def points_attributes(vertices: np.ndarray, path: str = "PLY") -> dict[str, np.ndarray]:
    """3DGS PLY vertex records -> the attributes of a plain point cloud (Blender before 5.3), float32.

    Args:
        vertices: Structured records from ``read_ply_vertices``. [N]
        path: For error messages.

    Returns:
        ``position [N, 3]``, ``rotation [N, 4]``, ``scale [N, 3]``, ``opacity [N]``, ``radiance:base [N, 4]``,
        ``radiance:sh_<k> [N, 3]``, ``radius [N]``, and ``part_id`` / ``loose`` [N] when present.
    """
    names, cols = _columns(vertices, path)
    quats = _unit_quaternions(cols(["rot_0", "rot_1", "rot_2", "rot_3"]))
    scale = np.exp(cols(["scale_0", "scale_1", "scale_2"]))
    opacity = 1.0 / (1.0 + np.exp(-cols(["opacity"])[:, 0]))
    rgb = 0.5 + np.float32(SH_C0) * cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    out = {
        "position": cols(["x", "y", "z"]),
        "rotation": quats,
        "scale": scale,
        "opacity": opacity,
        "radiance:base": np.concatenate([rgb, opacity[:, None]], axis=1),
        "radius": np.maximum(np.float32(RADIUS_FACTOR) * scale.mean(axis=1), np.float32(MIN_RADIUS)),
    }
    for k, coeffs in enumerate(_sh_rest(names, cols, len(vertices), path)):
        out[f"radiance:sh_{k + 1}"] = coeffs
    for label in ("part_id", "loose"):
        if label in names:
            out[label] = cols([label])[:, 0]
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in out.items()}


def write_3dgs_ply(path: str | os.PathLike, means: np.ndarray, quats: np.ndarray, log_scales: np.ndarray,
                   opacity_logits: np.ndarray, sh: np.ndarray) -> None:
    """Write the standard 3DGS PLY layout (docs/design.md §3) with numpy, atomically (temporary file + rename).

    Args:
        path: Output file.
        means: [N, 3]; quats: (w, x, y, z) [N, 4]; log_scales: [N, 3]; opacity_logits: [N];
        sh: 3DGS SH coefficients, DC first. [N, K, 3]
    """
    means = np.asarray(means)
    n = len(means)
    sh = np.asarray(sh).reshape(n, -1, 3)
    k = sh.shape[1]
    checks = {"means": (means, (n, 3)), "quats": (np.asarray(quats), (n, 4)),
              "log_scales": (np.asarray(log_scales), (n, 3)), "opacity_logits": (np.asarray(opacity_logits), (n,))}
    for name, (value, shape) in checks.items():
        if value.shape != shape:
            raise ResultError(f"{name}: expected shape {list(shape)}, got {list(value.shape)}")
    rest = np.transpose(sh[:, 1:], (0, 2, 1)).reshape(n, 3 * (k - 1))
    data = np.concatenate([means, np.zeros((n, 3)), sh[:, 0], rest, np.asarray(opacity_logits)[:, None],
                           log_scales, quats], axis=1).astype("<f4")
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(np.ascontiguousarray(data).tobytes())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def attribute_type(name: str, values: np.ndarray, native: bool) -> str:
    """Blender data type of a point attribute: by width (FLOAT [N], FLOAT_VECTOR [N, 3]), and for [N, 4] by name:
    ``rotation`` is a QUATERNION, anything else FLOAT4 in Blender 5.3's splat layout (``native``), else a colour."""
    width = 1 if values.ndim == 1 else values.shape[1]
    if width == 1:
        return "FLOAT"
    if width == 3:
        return "FLOAT_VECTOR"
    if width == 4:
        return "QUATERNION" if name == "rotation" else ("FLOAT4" if native else "FLOAT_COLOR")
    raise ResultError(f"attribute '{name}': no Blender type holds {width} components")


def foreach_key(data_type: str) -> str:
    return {"QUATERNION": "value", "FLOAT_COLOR": "color", "FLOAT_VECTOR": "vector", "FLOAT4": "vector",
            "FLOAT": "value"}[data_type]


