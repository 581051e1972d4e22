"""Fuzz: 1000 random, malformed, truncated, oversized and wrong-version messages against a server subprocess.

Every message is answered with an error reply, or (over ZeroMQ's size limit) dropped with its connection;
the server still answers hello afterwards and its memory stays bounded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import zmq

from backend.wire import protocol
from backend.wire.client import Client

pytestmark = pytest.mark.e2e

LIMIT_MB = 1


def _valid(action: str, **fields) -> list[bytes]:
    return [bytes(f) for f in protocol.request(action, fields)]


def _messages(rng: np.random.Generator, count: int) -> list[tuple[str, list[bytes]]]:
    """(category, frames) pairs; every category except "oversized" must get an error reply."""
    big = LIMIT_MB << 20
    out = []
    for i in range(count):
        kind = i % 12
        rid = f"fuzz-{i}"
        if kind == 0:
            out.append(("random bytes", [rng.bytes(int(rng.integers(0, 300)))]))
        elif kind == 1:
            frames = _valid(str(rng.choice(protocol.ACTIONS)), job="x")
            cut = int(rng.integers(0, len(frames[0])))
            out.append(("truncated header", [frames[0][:cut]]))
        elif kind == 2:
            header = {"type": "hello_request", "protocol": int(rng.choice([0, 2, 99, -1])), "id": rid}
            out.append(("wrong version", [json.dumps(header).encode()]))
        elif kind == 3:
            junk = [None, 1.5, {}, True, "a" * 500][int(rng.integers(0, 5))]
            header = {"type": "hello_request", "protocol": 1, "id": rid,
                      str(rng.choice(["type", "id", "arrays", "protocol"])): junk}
            out.append(("bad field", [json.dumps(header).encode()]))
        elif kind == 4:
            shape = [int(rng.integers(1, 50)), 3]
            header = {"type": "submit_request", "protocol": 1, "id": rid,
                      "arrays": [{"name": "motion.root_orient", "dtype": "float32", "shape": shape}]}
            buffer = rng.bytes(int(np.prod(shape)) * 4 - int(rng.integers(1, 12)))
            out.append(("truncated buffer", [json.dumps(header).encode(), buffer]))
        elif kind == 5:
            frames = _valid("submit", spec={"gaussians": int(rng.integers(-5, 5)), "motion": {"fps": 30.0}})
            out.append(("submit without arrays", frames))
        elif kind == 6:
            action = str(rng.choice(["status", "cancel", "result"]))
            job = str(rng.choice(["", "nope", "../x", "a" * 80, "20260101-000000-00000000"]))
            out.append(("unknown job", _valid(action, job=job, start=int(rng.integers(-3, 3)))))
        elif kind == 7:
            out.append(("unknown action", _valid("hello")[:0] + [json.dumps(
                {"type": f"{rng.choice(['explode', 'eval', 'pickle'])}_request", "protocol": 1,
                 "id": rid}).encode()]))
        elif kind == 8:
            out.append(("reply sent to server", [json.dumps(
                {"type": "hello_reply", "protocol": 1, "id": rid, "status": "ok"}).encode()]))
        elif kind == 9:
            depth = int(rng.integers(500, 5000))
            out.append(("deep json", [b"[" * depth + b"]" * depth]))
        elif kind == 10:
            # many frames, each under ZeroMQ's per-frame limit, adding up to more than our limit
            n = 3
            header = {"type": "hello_request", "protocol": 1, "id": rid,
                      "arrays": [{"name": f"a{k}", "dtype": "uint8", "shape": [big // 2]} for k in range(n)]}
            out.append(("too large in sum", [json.dumps(header).encode()] + [bytes(big // 2)] * n))
        else:
            if i % 48 == 11:
                out.append(("oversized", [b'{"type":"hello_request","protocol":1,"id":"o"}', bytes(big + 1)]))
            else:
                header = {"type": "body_model_request", "protocol": 1, "id": rid, "name": 7,
                          "arrays": [{"name": "betas", "dtype": "float64", "shape": [2, 2]}]}
                out.append(("bad body_model", [json.dumps(header).encode(), bytes(32)]))
    return out


def test_fuzz_1000_messages(server_process, tmp_path):
    server = server_process(tmp_path / "jobs", "--max-message-mb", str(LIMIT_MB))
    rng = np.random.default_rng(1234)
    messages = _messages(rng, 1000)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    answered = dropped = 0
    rss_after_warmup = None
    for index, (category, frames) in enumerate(messages):
        if category == "oversized":
            # ZeroMQ drops the message and the connection: use a throwaway socket
            throwaway = ctx.socket(zmq.DEALER)
            throwaway.setsockopt(zmq.LINGER, 0)
            throwaway.connect(server.endpoint)
            throwaway.send_multipart(frames)
            assert throwaway.poll(200) == 0, "an oversized message was answered"
            throwaway.close()
            dropped += 1
            continue
        sock.send_multipart(frames)
        assert sock.poll(5000), f"message {index} ({category}) got no reply"
        reply = protocol.decode(sock.recv_multipart())
        assert reply.type.endswith("_reply") and reply.header["status"] == "error", (category, reply.header)
        assert reply.header["message"], category
        answered += 1
        if index == 99:
            rss_after_warmup = server.rss_kib()
    sock.close()
    assert answered + dropped == 1000 and dropped >= 10
    rss_end = server.rss_kib()
    print(f"fuzz: {answered} answered, {dropped} dropped; server RSS {rss_after_warmup} -> {rss_end} KiB")
    assert rss_end - rss_after_warmup < 40_000, f"RSS grew from {rss_after_warmup} to {rss_end} KiB"
    with Client(server.endpoint, timeout_s=10) as client:
        assert client.hello()["server"] == "ani3dhuman"
        assert client.jobs() == []
    assert server.stop() == 0
