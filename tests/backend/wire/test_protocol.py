"""Wire protocol: encode/decode round trips, validation naming the field, the add-on's copies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.wire import protocol
from backend.wire.protocol import ProtocolError, decode, encode, field_value


pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def test_addon_copies_are_byte_identical(tmp_path):
    """The add-on's wire package is vendored from backend/wire at build and test time, byte for byte, and no copy
    is committed."""
    import importlib.util
    import subprocess

    spec = importlib.util.spec_from_file_location("vendor_wire", REPO / "scripts" / "vendor_wire.py")
    vendor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor)
    vendored = vendor.vendor_wire(tmp_path / "addon")
    for name in ("protocol.py", "client.py"):
        backend_file = (REPO / "backend" / "wire" / name).read_bytes()
        addon_file = (vendored / name).read_bytes()
        assert addon_file == backend_file, f"vendored {name} differs from backend/wire/{name}"
    tracked = subprocess.run(["git", "ls-files", "blender_addon"], cwd=REPO, capture_output=True, text=True).stdout
    assert tracked and not any(line.startswith("blender_addon/wire/") or line in ("blender_addon/protocol.py",
                                                                                  "blender_addon/client.py")
                               for line in tracked.splitlines()), "a committed copy of the wire"


def test_protocol_and_client_import_nothing_heavy():
    import ast

    allowed = {"__future__", "json", "math", "re", "uuid", "collections", "dataclasses", "typing", "numpy",
               "zmq", "os", "time", "pathlib", "zmq.auth"}
    for name in ("__init__.py", "protocol.py", "client.py"):
        tree = ast.parse((REPO / "backend" / "wire" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: only the sibling modules of the wire package
                    assert node.level == 1 and node.module in ("protocol", "client"), \
                        f"{name}: relative import of {node.module}"
                    continue
                modules = [node.module]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] in {m.split(".")[0] for m in allowed} and module not in (
                    "torch", "bpy"), f"{name} imports {module}"


def test_round_trip_keeps_arrays_bit_exact():
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(5, 3)).astype(np.float32), "b": np.arange(7, dtype=np.int64),
              "c": np.zeros((0, 4), np.float16), "d": np.array([True, False]),
              "big_endian": np.arange(3, dtype=">f8"), "strided": rng.normal(size=(6, 6))[::2, ::3]}
    frames = encode({"type": "x_request", "protocol": 1, "id": "r1", "k": [1, 2]}, arrays)
    message = decode([bytes(f) for f in frames])
    assert message.type == "x_request" and message.id == "r1" and message.action == "x"
    assert message.header["k"] == [1, 2]
    for name, array in arrays.items():
        got = message.arrays[name]
        assert got.shape == array.shape and got.dtype == array.dtype.newbyteorder("<")
        np.testing.assert_array_equal(got, array)


def test_encode_refuses_object_arrays():
    with pytest.raises(ProtocolError, match="dtype"):
        encode({"type": "x_request", "protocol": 1, "id": "r"}, {"o": np.array([{}, 1], dtype=object)})


def _frames(header: dict, *buffers: bytes) -> list[bytes]:
    return [json.dumps(header).encode(), *buffers]


BASE = {"type": "hello_request", "protocol": 1, "id": "abc"}


@pytest.mark.parametrize(("frames", "field"), [
    ([], "message"),
    ([b"\xff\xfe"], "header"),
    ([b"[1, 2]"], "header"),
    ([b'{"type": "hello_request", "protocol": 1, "id": "a", "x": NaN}'], "header"),
    (_frames({**BASE, "protocol": 2}), "protocol"),
    (_frames({**BASE, "protocol": "1"}), "protocol"),
    (_frames({**BASE, "protocol": True}), "protocol"),
    (_frames({k: v for k, v in BASE.items() if k != "protocol"}), "protocol"),
    (_frames({**BASE, "type": "hello"}), "type"),
    (_frames({**BASE, "type": 5}), "type"),
    (_frames({**BASE, "id": ""}), "id"),
    (_frames({**BASE, "id": 7}), "id"),
    (_frames({**BASE, "arrays": {}}), "arrays"),
    (_frames({**BASE, "arrays": []}, b"1234"), "arrays"),
    (_frames({**BASE, "arrays": [{"name": "a", "dtype": "float32", "shape": [2]}]}, b"123"), "'a'"),
    (_frames({**BASE, "arrays": [{"name": "a", "dtype": "object", "shape": [1]}]}, b"12345678"), "dtype"),
    (_frames({**BASE, "arrays": [{"name": "a", "dtype": "float32", "shape": [-1]}]}, b""), "shape"),
    (_frames({**BASE, "arrays": [{"name": "a", "dtype": "float32", "shape": [1.5]}]}, b""), "shape"),
    (_frames({**BASE, "arrays": [{"name": "", "dtype": "uint8", "shape": [0]}]}, b""), "name"),
    (_frames({**BASE, "arrays": [{"name": "a", "dtype": "uint8", "shape": [1]}] * 2}, b"x", b"y"), "duplicate"),
    (_frames({**BASE, "arrays": ["a"]}, b"x"), "arrays[0]"),
])
def test_decode_rejects_with_the_field_named(frames, field):
    with pytest.raises(ProtocolError) as info:
        decode(frames)
    assert field in str(info.value)


def test_decode_size_limit():
    frames = encode(BASE, {"a": np.zeros(1000, np.uint8)})
    decode(frames, max_bytes=2000)
    with pytest.raises(ProtocolError, match="message size"):
        decode(frames, max_bytes=1000)


def test_peek_id_survives_garbage():
    assert protocol.peek_id([b'{"id": "x1", "protocol": 9}']) == "x1"
    assert protocol.peek_id([b"\x00garbage"]) is None
    assert protocol.peek_id([b'{"id": 3}']) is None


def test_field_value_checks_type_range_and_choices():
    header = {"n": 3, "f": 2, "s": "abc", "b": True, "nan": float("nan")}
    assert field_value(header, "n", "int", minimum=0) == 3
    assert field_value(header, "f", "float") == 2.0
    assert field_value(header, "missing", "int", default=5) == 5
    with pytest.raises(ProtocolError, match="'missing': required"):
        field_value(header, "missing", "int")
    with pytest.raises(ProtocolError, match="'b': expected int"):
        field_value(header, "b", "int")
    with pytest.raises(ProtocolError, match="'nan': expected float"):
        field_value(header, "nan", "float")
    with pytest.raises(ProtocolError, match="'n': expected at most 2"):
        field_value(header, "n", "int", maximum=2)
    with pytest.raises(ProtocolError, match="'s': expected one of"):
        field_value(header, "s", "str", choices=["x"])


def test_requests_replies_and_frames_helpers():
    message = decode(protocol.request("status", {"job": "j"}, request_id="q"))
    assert message.type == "status_request" and message.header["job"] == "j"
    with pytest.raises(ProtocolError, match="action"):
        protocol.request("explode")
    error = decode(protocol.error_reply("status", "q", "no job 'j'"))
    assert error.type == "status_reply" and error.header["status"] == "error" and "no job" in error.header["message"]
    g = {name: np.full((2, 3), i, np.float32) for i, name in enumerate(protocol.GAUSSIAN_FIELDS)}
    reply = decode(protocol.reply("result", "q", {"start": 4}, {**protocol.frame_arrays(4, g),
                                                                 **protocol.frame_arrays(5, g)}))
    frames = protocol.split_frames(reply.arrays)
    assert list(frames) == [4, 5] and set(frames[4]) == set(protocol.GAUSSIAN_FIELDS)
    del reply.arrays["frame.5.sh"]
    with pytest.raises(ProtocolError, match="frame 5"):
        protocol.split_frames(reply.arrays)
    progress = decode(protocol.progress("job1", {"stage": "fit", "fraction": 0.5}, b"\x89PNG"))
    assert progress.type == "progress" and progress.header["job"] == "job1"
    assert progress.arrays["preview_png"].tobytes() == b"\x89PNG"
