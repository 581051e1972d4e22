"""Fixtures for the service tests: tiny motions, a server in this process, a server in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend.wire.client import Client, ServiceTimeout

REPO = Path(__file__).resolve().parents[3]


def tiny_motion(frames: int = 4, seed: int = 0) -> dict:
    """A small random SMPL-X motion as the wire carries it (float32 arrays + fps)."""
    rng = np.random.default_rng(seed)
    return {
        "root_orient": rng.normal(0, 0.2, (frames, 3)).astype(np.float32),
        "pose_body": rng.normal(0, 0.2, (frames, 63)).astype(np.float32),
        "trans": rng.normal(0, 0.05, (frames, 3)).astype(np.float32),
        "betas": rng.normal(0, 0.5, 10).astype(np.float32),
        "fps": 30.0,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(tmp: Path) -> dict:
    env = dict(os.environ)
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), HF_HOME=str(home / "hf"),
               HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return env


class ServerProcess:
    """``ani3dhuman serve`` in a subprocess on a free loopback port."""

    def __init__(self, jobs: Path, tmp: Path, *extra: str, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.log = open(tmp / f"server-{self.port}-{time.monotonic_ns()}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--endpoint", self.endpoint, "--jobs", str(jobs), *extra],
            cwd=REPO, env=service_env(tmp), stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        with Client(self.endpoint, timeout_s=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
                try:
                    return client.hello()
                except ServiceTimeout:
                    continue
        raise RuntimeError(f"server not ready: {self.output()}")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> int:
        """Ask for a shutdown; kill if it does not exit in time."""
        if self.proc.poll() is None:
            try:
                with Client(self.endpoint, timeout_s=5.0) as client:
                    client.shutdown()
                self.proc.wait(15)
            except (ServiceTimeout, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def server_process(tmp_path):
    """Factory: ``server_process(jobs_dir, *args)`` starts a subprocess server; all are stopped at the end."""
    started: list[ServerProcess] = []

    def start(jobs: Path | None = None, *extra: str, port: int | None = None) -> ServerProcess:
        server = ServerProcess(jobs or tmp_path / "jobs", tmp_path, *extra, port=port)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.kill()


@pytest.fixture
def local_server(tmp_path):
    """Factory for a server running in a thread of this process (real pipeline unless a runner is given)."""
    from backend.service import Server, ServerSettings

    servers = []

    def start(runner=None, **settings) -> Server:
        settings.setdefault("endpoint", "tcp://127.0.0.1:*")
        settings.setdefault("jobs_dir", tmp_path / "jobs")
        server = Server(ServerSettings(**settings), runner=runner).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
