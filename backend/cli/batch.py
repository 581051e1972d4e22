"""``ani3dhuman batch JOBS.json --out DIR``: many animate jobs, in this process or on a Ray cluster.

JOBS.json is ``{"jobs": [{"name": "walk_a", "motion": "walk.npz", "gaussians": 4000, ...}, ...]}``: every key
but ``name`` is an ``animate`` option spelled as its flag without dashes (``"reference_frame": 0``,
``"renders": true``); relative paths are relative to JOBS.json.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from backend.cli.animate import add_job_arguments, spec_from_args
from backend.core.errors import InputError
from backend.motion import load_motion

log = logging.getLogger(__name__)

PATH_OPTIONS = ("motion", "image", "camera", "import_gaussians", "reference_pose")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="run many animate jobs (optionally on a Ray cluster)",
                       description="Run the animate jobs of JOBS.json, each into OUT/<name>/ (atomically). A re-run "
                                   "skips finished jobs; a failed job fails alone; a summary table ends the run.")
    p.add_argument("jobs", help="JOBS.json: {\"jobs\": [{\"name\": ..., \"motion\": ..., <animate options>}]}")
    p.add_argument("--out", required=True, help="folder that receives one job folder per job")
    p.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="run on Ray: 'local' starts a private cluster on this machine (loopback only), 'auto' joins "
                        "RAY_ADDRESS or a running cluster (else local), or a cluster address (HOST:6379, "
                        "ray://HOST:10001). Without it jobs run in this process, one at a time.")
    p.add_argument("--max-parallel", type=int, default=None,
                   help="jobs at once (default: 1 in this process; the cluster's CPUs / --cpus-per-job on Ray)")
    p.add_argument("--cpus-per-job", type=int, default=1, help="CPUs (and torch threads) per job on Ray")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray cluster (default: all)")
    p.add_argument("--shared-folder", action="store_true",
                   help="Ray workers write job folders themselves (every node sees --out at the same path); "
                        "default: results travel back through Ray's object store")
    p.set_defaults(run=run)


def _job_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="JOBS.json entry", add_help=False, exit_on_error=False)
    add_job_arguments(parser)
    parser.add_argument("--motion", required=True)
    return parser


def _argv(entry: dict, base: Path) -> list[str]:
    argv = []
    for key, value in entry.items():
        if key == "name" or value is None or value is False:
            continue
        if key in PATH_OPTIONS:
            value = str((base / str(value)).resolve()) if not Path(str(value)).is_absolute() else str(value)
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv.append(str(value))
    return argv


def read_jobs(path: str | Path) -> list:
    """JOBS.json -> ``BatchJob``s (validated: an entry that ``animate`` would refuse is refused here, by name)."""
    from backend.farm.batch import BatchJob

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"jobs file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"jobs: {path} is not valid JSON ({exc})") from exc
    entries = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f'jobs: {path} must be {{"jobs": [{{"name": ..., "motion": ...}}, ...]}} with at least one job')
    parser = _job_parser()
    known = {a.dest for a in parser._actions}
    jobs = []
    for i, entry in enumerate(entries):
        label = f"jobs[{i}]" + (f" {entry.get('name')!r}" if isinstance(entry, dict) else "")
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InputError(f"{label}: expected an object with a 'name'")
        unknown = sorted(set(entry) - known - {"name"})
        if unknown:
            raise InputError(f"{label}: unknown option(s) {unknown}; use animate's flags without dashes")
        try:
            args = parser.parse_args(_argv(entry, path.parent))
            spec = spec_from_args(args, load_motion(args.motion))
            jobs.append(BatchJob(entry["name"], spec.to_dict()))
        except (argparse.ArgumentError, InputError, FileNotFoundError, ValueError) as exc:
            raise InputError(f"{label}: {exc}") from None
    return jobs


def run(args: argparse.Namespace) -> int:
    from backend.farm import LocalExecutor, RayExecutor, RaySettings, connect, shutdown
    from backend.farm.batch import run_batch, summary_table

    jobs = read_jobs(args.jobs)
    if args.ray is None:
        executor, parallel = LocalExecutor(), args.max_parallel or 1
        outcomes = run_batch(jobs, args.out, executor, max_parallel=parallel, report=log.info)
    else:
        info = connect(RaySettings(address=args.ray, num_cpus=args.ray_cpus))
        try:
            import ray

            executor = RayExecutor(cpus_per_job=args.cpus_per_job, shared_folder=args.shared_folder)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            parallel = args.max_parallel or max(1, cpus // args.cpus_per_job)
            outcomes = run_batch(jobs, args.out, executor, max_parallel=parallel, report=log.info)
        finally:
            if info.get("started"):
                shutdown()
    print(summary_table(outcomes))
    failed = [o for o in outcomes if o.status not in ("done", "skipped")]
    return 1 if failed else 0
