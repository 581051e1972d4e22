#!/usr/bin/env python
"""Benchmark the compute service on loopback: status latency under load and a large result transfer.

1. Starts ``ani3dhuman serve`` in a subprocess on a free loopback port (temporary jobs folder).
2. Submits a job big enough to keep the worker busy, and while it runs, N client threads each poll
   ``status`` in a loop: every request must be answered; p50/p99/max latency is printed (target p99 < 50 ms).
3. Fetches a finished job's result of about 100 MB (frames of Gaussians) and prints the time (target < 1 s).

Usage: ``.venv/bin/python scripts/bench_service.py [--clients 20] [--seconds 5] [--result-mb 100]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.wire.client import Client, ServiceTimeout  # noqa: E402

BYTES_PER_GAUSSIAN = 4 * (3 + 4 + 3 + 1 + 3)  # means, quats, log_scales, opacity_logits, sh (K=1)


def motion(frames: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"root_orient": rng.normal(0, 0.2, (frames, 3)).astype(np.float32),
            "pose_body": rng.normal(0, 0.2, (frames, 63)).astype(np.float32),
            "trans": np.zeros((frames, 3), np.float32), "betas": np.zeros(10, np.float32), "fps": 30.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(jobs: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--endpoint", endpoint, "--jobs", str(jobs)],
                            cwd=REPO, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    with Client(endpoint, timeout_s=1.0) as client:
        for _ in range(120):
            try:
                client.hello()
                return proc, endpoint
            except ServiceTimeout:
                if proc.poll() is not None:
                    break
    raise SystemExit(f"server did not start; log: {log_path.read_text()[-2000:]}")


def poll_status(endpoint: str, job: str, seconds: float) -> tuple[list, list]:
    """One client: poll ``status`` every 10 ms for ``seconds``; returns (latencies in s, failures)."""
    latencies, failures = [], []
    with Client(endpoint, timeout_s=2.0) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                client.status(job)
                latencies.append(time.perf_counter() - start)
            except Exception as exc:  # counted, reported
                failures.append(repr(exc))
            time.sleep(0.01)
    return latencies, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--client-mode", choices=("process", "thread"), default="process",
                        help="clients as separate processes (default) or threads of this one")
    parser.add_argument("--skip-transfer", action="store_true", help="only the status-latency part")
    parser.add_argument("--result-mb", type=float, default=100.0)
    parser.add_argument("--result-gaussians", type=int, default=50_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ani3d-bench-") as tmp:
        tmp = Path(tmp)
        proc, endpoint = start_server(tmp / "jobs", tmp / "server.log")
        try:
            client = Client(endpoint, timeout_s=600)
            # the large result job first (so it is finished when we fetch it)
            frames = max(1, round(args.result_mb * 1e6 / (args.result_gaussians * BYTES_PER_GAUSSIAN)))
            if not args.skip_transfer:
                t0 = time.perf_counter()
                big = client.submit({"motion": motion(frames, 1), "gaussians": args.result_gaussians, "seed": 0})
                assert client.wait(big, timeout_s=1200)["state"] == "done"
                print(f"result job: {frames} frames x {args.result_gaussians} Gaussians computed in "
                      f"{time.perf_counter() - t0:.1f} s")

            # status latency while a job runs
            busy = client.submit({"motion": motion(5000, 2), "gaussians": 2000, "seed": 0})
            while client.status(busy)["state"] != "running":
                time.sleep(0.01)
            latencies: list[float] = []
            failures: list[str] = []
            # separate processes, like separate Blender sessions (threads would measure our own GIL too)
            pool = (concurrent.futures.ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("spawn"))
                    if args.client_mode == "process" else concurrent.futures.ThreadPoolExecutor(args.clients))
            with pool:
                if args.client_mode == "process":  # start the processes before measuring
                    list(pool.map(time.sleep, [0.0] * args.clients))
                for lat, fail in pool.map(poll_status, [endpoint] * args.clients, [busy] * args.clients,
                                          [args.seconds] * args.clients):
                    latencies += lat
                    failures += fail
            job_state = client.status(busy)["state"]
            client.cancel(busy)
            ms = np.array(latencies) * 1000
            print(f"\nstatus polling: {args.clients} clients ({'processes' if args.client_mode == 'process' else 'threads'}) x {args.seconds:.0f} s while a job runs "
                  f"(job state at the end: {job_state})")
            print("| requests | failures | p50 ms | p90 ms | p99 ms | max ms |")
            print("|---------:|---------:|-------:|-------:|-------:|-------:|")
            print(f"| {len(ms)} | {len(failures)} | {np.percentile(ms, 50):.2f} | {np.percentile(ms, 90):.2f} | "
                  f"{np.percentile(ms, 99):.2f} | {ms.max():.2f} |")
            if failures:
                print("failures:", failures[:5])

            # large result transfer
            rows = []
            for per_chunk in () if args.skip_transfer else (frames, 8):
                runs = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    received = dict(client.fetch_result(big, frames_per_chunk=per_chunk))
                    runs.append(time.perf_counter() - t0)
                nbytes = sum(a.nbytes for f in received.values() for a in f.values())
                rows.append((per_chunk, nbytes, float(np.median(runs)), min(runs)))
            if rows:
                print(f"\nresult transfer ({frames} frames), median of 3 (load_ply on the server + wire + decode):")
                print("| frames per chunk | MB | median s | best s | MB/s |")
                print("|-----------------:|---:|---------:|-------:|-----:|")
            for per_chunk, nbytes, median, best in rows:
                print(f"| {per_chunk} | {nbytes / 1e6:.1f} | {median:.3f} | {best:.3f} | {nbytes / 1e6 / median:.0f} |")
            client.shutdown()
            client.close()
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
