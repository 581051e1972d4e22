"""Endpoint security: loopback only without keys; CurveZMQ with an allow list; wrong keys get nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import zmq
import zmq.auth

from backend.wire.client import Client, CurveKeys, ServiceTimeout
from backend.core.errors import InputError
from backend.service.security import check_endpoint, is_loopback_endpoint, load_allowed_clients, make_keys
from backend.service import ServerSettings

from .conftest import REPO, service_env


@pytest.mark.unit
@pytest.mark.parametrize(("endpoint", "loopback"), [
    ("tcp://127.0.0.1:5555", True), ("tcp://127.0.0.2:5555", True), ("tcp://localhost:5555", True),
    ("tcp://[::1]:5555", True), ("ipc:///tmp/ani3d.sock", True), ("inproc://x", True),
    ("tcp://127.0.0.1:*", True),
    ("tcp://0.0.0.0:5555", False), ("tcp://*:5555", False), ("tcp://192.168.1.5:5555", False),
    ("tcp://eth0:5555", False), ("tcp://[::]:5555", False), ("tcp://example.com:5555", False),
    ("udp://127.0.0.1:5555", False), ("nonsense", False),
])
def test_loopback_classification(endpoint, loopback):
    assert is_loopback_endpoint(endpoint) is loopback


@pytest.mark.unit
def test_refusals_before_binding(tmp_path):
    check_endpoint(ServerSettings(endpoint="tcp://127.0.0.1:5555"))
    for settings, needle in [
        (ServerSettings(endpoint="tcp://0.0.0.0:5555"), "not loopback"),
        (ServerSettings(endpoint="tcp://*:5555"), "not loopback"),
        (ServerSettings(endpoint="ws://127.0.0.1:5555"), "endpoint"),
        (ServerSettings(endpoint="tcp://127.0.0.1:5555", require_curve=True), "require_curve"),
        (ServerSettings(endpoint="tcp://0.0.0.0:5555", curve_secret_key=tmp_path / "k"), "together"),
    ]:
        with pytest.raises(InputError, match=needle):
            check_endpoint(settings)


@pytest.mark.e2e
def test_cli_refuses_a_remote_endpoint_without_keys(tmp_path):
    run = subprocess.run([sys.executable, "-m", "backend", "serve", "--endpoint", "tcp://0.0.0.0:5555",
                          "--jobs", str(tmp_path / "jobs")], cwd=REPO, env=service_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "not loopback" in lines[0] and "CurveZMQ" in lines[0]
    assert not (tmp_path / "jobs").exists()


@pytest.mark.unit
def test_allowed_clients_formats(tmp_path):
    make_keys(tmp_path / "keys")
    public, _ = zmq.auth.load_certificate(str(tmp_path / "keys" / "client.key"))
    assert load_allowed_clients(tmp_path / "keys" / "client.key") == {public}
    listing = tmp_path / "allowed.txt"
    listing.write_text(f"# studio machines\n{public.decode()}\n")
    assert load_allowed_clients(listing) == {public}
    listing.write_text("short\n")
    with pytest.raises(InputError, match="allowed.txt:1"):
        load_allowed_clients(listing)
    with pytest.raises(InputError, match="does not exist"):
        load_allowed_clients(tmp_path / "nope")


@pytest.mark.e2e
def test_curve_allows_listed_keys_and_ignores_others(tmp_path, local_server):
    keys = tmp_path / "keys"
    make_keys(keys)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "client.key").write_bytes((keys / "client.key").read_bytes())
    server = local_server(endpoint="tcp://127.0.0.1:*", require_curve=True,
                          curve_secret_key=keys / "server.key_secret", curve_allowed_clients=allowed)
    good = CurveKeys.from_files(keys / "server.key", keys / "client.key_secret")
    with Client(server.endpoint, curve=good, timeout_s=5) as client:
        assert client.hello()["curve"] is True

    intruder_public, intruder_secret = zmq.curve_keypair()
    wrong = CurveKeys(good.server_public, intruder_public, intruder_secret)
    with Client(server.endpoint, curve=wrong, timeout_s=1.0) as client:
        with pytest.raises(ServiceTimeout):
            client.hello()
    with Client(server.endpoint, timeout_s=1.0) as client:  # no Curve at all
        with pytest.raises(ServiceTimeout):
            client.hello()
    # a raw socket with the wrong key that ignores IMMEDIATE gets nothing either
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.curve_serverkey, raw.curve_publickey, raw.curve_secretkey = good.server_public, intruder_public, intruder_secret
    raw.connect(server.endpoint)
    from backend.wire import protocol

    raw.send_multipart(protocol.request("hello"))
    assert raw.poll(1000) == 0
    raw.close(linger=0)
    with Client(server.endpoint, curve=good, timeout_s=5) as client:  # still serving the allowed client
        assert client.hello()["server"] == "ani3dhuman"


@pytest.mark.unit
def test_cli_make_keys_and_option_checks(tmp_path, capsys):
    import stat

    from backend.cli import main

    assert main(["serve", "--make-keys", str(tmp_path / "keys")]) == 0
    names = sorted(p.name for p in (tmp_path / "keys").iterdir())
    assert names == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    assert stat.S_IMODE((tmp_path / "keys" / "server.key_secret").stat().st_mode) == 0o600
    public, secret = zmq.auth.load_certificate(str(tmp_path / "keys" / "server.key_secret"))
    assert len(public) == 40 and len(secret) == 40
    capsys.readouterr()
    for argv, needle in [
        (["--body-model", "nameonly"], "NAME=PATH"),
        (["--body-model", f"default={tmp_path}"], "'default'"),
        (["--body-model", f"smplx={tmp_path / 'missing.npz'}"], "not found"),
        (["--max-message-mb", "0"], "--max-message-mb"),
        (["--endpoint", "tcp://0.0.0.0:1", "--curve-secret-key", str(tmp_path / "keys" / "server.key_secret")],
         "together"),
        (["--endpoint", "tcp://0.0.0.0:1", "--curve-secret-key", str(tmp_path / "keys" / "server.key"),
          "--curve-allowed-clients", str(tmp_path / "keys")], "secret"),
    ]:
        assert main(["serve", "--jobs", str(tmp_path / "jobs"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (argv, err)
