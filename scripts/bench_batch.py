#!/usr/bin/env python3
"""N animate jobs: serial in this process vs a private local Ray cluster with 1 and with 2 workers, measured in
one run (medians over --repeats). Prints a table: wall time, jobs per minute, throughput vs serial.

    .venv/bin/python scripts/bench_batch.py [--jobs 6] [--gaussians 20000] [--frames 48] [--repeats 1] [--photo]

Without --photo the jobs are rigid animations of the default subject (I/O-bound, ~0.2 s each: what a farm adds
per job shows). With --photo each job reconstructs the subject from a synthetic photo at ``preview`` quality
first (compute-bound, ~20-30 s on 2 cores), which is where parallel workers pay off.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.body import load_body_model  # noqa: E402
from backend.farm import LocalExecutor, RayExecutor, RaySettings, connect, shutdown  # noqa: E402
from backend.farm.batch import BatchJob, run_batch  # noqa: E402
from backend.motion.builtin import builtin_motion  # noqa: E402
from backend.stages import JobSpec  # noqa: E402


def timed(jobs, executor, parallel: int) -> float:
    with tempfile.TemporaryDirectory(prefix="ani3d-bench-batch-") as out:
        start = time.perf_counter()
        outcomes = run_batch(jobs, out, executor, max_parallel=parallel, report=lambda line: None)
        elapsed = time.perf_counter() - start
    bad = [o for o in outcomes if o.status != "done"]
    if bad:
        raise SystemExit(f"bench: jobs failed: {bad}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--gaussians", type=int, default=20_000)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--photo", action="store_true", help="reconstruct each job's subject from a photo first")
    args = parser.parse_args()
    body = load_body_model("default")
    motions = [builtin_motion(name, body, frames=args.frames) for name in ("walk", "twirl")]
    photo = {}
    if args.photo:
        from backend.stages.demo_photo import write_reference_photo

        image, camera = write_reference_photo(body, motions[0], Path(tempfile.mkdtemp(prefix="ani3d-bench-photo-")))
        photo = {"image": str(image), "camera": json.loads(camera.read_text()), "reference_frame": 0}
    jobs = [BatchJob(f"job_{i}", JobSpec(motion=motions[0] if photo else motions[i % 2], gaussians=args.gaussians,
                                         seed=i, **photo).to_dict())
            for i in range(args.jobs)]
    rows = []
    serial = statistics.median(timed(jobs, LocalExecutor(), 1) for _ in range(args.repeats))
    rows.append(("serial, this process", serial))
    for workers in (1, 2):
        started = time.perf_counter()
        connect(RaySettings(address="local", num_cpus=workers))
        startup = time.perf_counter() - started
        try:
            timed(jobs[:workers], RayExecutor(), workers)  # warm the workers (imports), not measured
            wall = statistics.median(timed(jobs, RayExecutor(), workers) for _ in range(args.repeats))
        finally:
            shutdown()
        rows.append((f"Ray, {workers} worker{'s' if workers > 1 else ''} (+{startup:.1f} s cluster start)", wall))
    kind = "photo reconstruction (preview) + animation" if args.photo else "rigid animation of the default subject"
    print(f"{args.jobs} jobs ({kind}) x {args.gaussians} Gaussians x {args.frames} frames, {args.repeats} "
          f"repeat(s), median")
    print(f"{'executor':44s} {'wall s':>8s} {'jobs/min':>9s} {'vs serial':>10s}")
    for name, wall in rows:
        print(f"{name:44s} {wall:8.2f} {60 * args.jobs / wall:9.1f} {serial / wall:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
