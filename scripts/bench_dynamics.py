"""Benchmark clothing dynamics: the demo's skirted subject, a 48-frame twirl, preview quality, on this machine.

Runs the job a user runs (``animate`` from the demo's reference photo with ``--dynamics cloth``) in a fresh
process, first with an empty kernel cache (cold: newton's kernels are compiled, by the first simulation: the
drape in the reconstruction) and then again with the cache it left (warm), and once with ``--dynamics none``
for the cost of the rest of the job. Prints seconds per simulated frame, the stages' and the whole job's time
and the hem radius.

    .venv/bin/python scripts/bench_dynamics.py [--frames 48] [--quality preview] [--runs 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prepare(work: Path, frames: int) -> tuple[Path, Path, Path]:
    """The demo's reference photo (walk frame 0 pose = twirl frame 0 pose: standing) and the twirl motion."""
    from backend.body import load_body_model
    from backend.motion.builtin import builtin_motion
    from backend.stages.demo_photo import write_reference_photo

    body = load_body_model("default")
    twirl = builtin_motion("twirl", body, frames=frames)
    photo, camera = write_reference_photo(body, twirl, work / "photo", frame=0)
    motion = work / "twirl.npz"
    twirl.save(motion)
    return photo, camera, motion


def animate(photo: Path, camera: Path, motion: Path, out: Path, dynamics: str, quality: str, cache: Path) -> dict:
    env = {**os.environ, "ANI3DHUMAN_CACHE": str(cache), "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "backend", "animate", "--motion", str(motion), "--image", str(photo),
                    "--camera", str(camera), "--reference-frame", "0", "--quality", quality, "--out", str(out),
                    "--dynamics", dynamics], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    result = json.loads((out / "result.json").read_text())
    return {"wall": wall, "dynamics": result["dynamics"], "timings": result["timings"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--quality", default="preview")
    p.add_argument("--runs", type=int, default=1, help="warm runs (the median is reported)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photo, camera, motion = prepare(work, args.frames)
        cache = work / "cache"
        rows = {"cold": [animate(photo, camera, motion, work / "cold", "cloth", args.quality, cache)]}
        rows["warm"] = [animate(photo, camera, motion, work / f"warm{k}", "cloth", args.quality, cache)
                        for k in range(args.runs)]
        rows["none"] = [animate(photo, camera, motion, work / "none", "none", args.quality, cache)]
    table = {}
    for name, runs in rows.items():
        dyn = [r["dynamics"] for r in runs]
        table[name] = {
            "job_seconds": statistics.median(r["wall"] for r in runs),
            "cloth_stage_seconds": statistics.median(r["timings"].get("cloth", 0.0) for r in runs),
            "reconstruct_seconds": statistics.median(r["timings"].get("reconstruct", 0.0) for r in runs),
            "seconds_per_frame": statistics.median(d["seconds"]["per_frame"] for d in dyn) if dyn[0]["mode"] == "cloth"
            else None,
            "compile_seconds": statistics.median(d["seconds"]["compile"] for d in dyn) if dyn[0]["mode"] == "cloth"
            else None,
            "frames_per_second": dyn[0].get("frames_per_second"),
            "hem_radius": dyn[0].get("hem_radius"),
            "device": dyn[0].get("device"),
        }
    if args.json:
        print(json.dumps(table, indent=1))
        return
    print(f"clothing dynamics: demo skirt, {args.frames}-frame twirl, quality {args.quality}, "
          f"{os.cpu_count()} CPUs (median of {args.runs} warm run(s))")
    print(f"{'run':<6} {'job s':>7} {'reconstruct s':>14} {'cloth stage s':>14} {'s/frame':>8} {'hem r first/max m':>18}")
    for name, row in table.items():
        hem = row["hem_radius"]
        hem_text = f"{hem['first']:.3f}/{hem['max']:.3f}" if hem else "-"
        spf = f"{row['seconds_per_frame']:.3f}" if row["seconds_per_frame"] is not None else "-"
        print(f"{name:<6} {row['job_seconds']:7.1f} {row['reconstruct_seconds']:14.1f} {row['cloth_stage_seconds']:14.1f} "
              f"{spf:>8} {hem_text:>18}")
    print(f"first kernel compile (cold − warm job, paid by the drape in the reconstruction): "
          f"{table['cold']['job_seconds'] - table['warm']['job_seconds']:.0f} s; setup.sh pays it at install")


if __name__ == "__main__":
    main()
