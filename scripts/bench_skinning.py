#!/usr/bin/env python
"""Benchmark the rigid layer: skin N Gaussians over F frames on CPU (issue 2: 100k x 81 frames <= 1 s).

Each case runs in a fresh subprocess so its peak resident memory is its own. Prints a markdown table of the
median of several repeats. Usage: .venv/bin/python scripts/bench_skinning.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASE = r"""
import json, resource, statistics, sys, time
import torch
from backend.body import load_body_model
from backend.motion.skinning import skin_means_quats
n, frames, repeats, chunk = (int(a) for a in sys.argv[1:5])
body = load_body_model("default")
g = torch.Generator().manual_seed(0)
from backend.reconstruct import sample_body_gaussians
canonical = sample_body_gaussians(body, None, n, g)
motion = dict(root_orient=torch.randn(frames, 3, generator=g) * 0.3, pose_body=torch.randn(frames, 63, generator=g) * 0.3,
              trans=torch.randn(frames, 3, generator=g))
transforms = body(None, **motion).joint_transforms
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(repeats):
    t = time.perf_counter()
    means, quats = skin_means_quats(canonical.means, canonical.quats, canonical.skin_weights, transforms,
                                    frames_per_chunk=chunk)
    times.append(time.perf_counter() - t)
    del means, quats
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "peak_mib": peak / 1024,
                  "delta_mib": (peak - base) / 1024, "threads": torch.get_num_threads()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cases = [(10_000, 81, 8), (40_000, 81, 8), (100_000, 81, 4), (100_000, 81, 8), (100_000, 81, 16)]
    print("| Gaussians | frames | frames/chunk | median s | min s | peak RSS MiB | RSS added MiB | threads |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, frames, chunk in cases:
        out = subprocess.run([sys.executable, "-c", CASE, str(n), str(frames), str(args.repeats), str(chunk)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {n:,} | {frames} | {chunk} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['peak_mib']:.0f} | "
              f"{r['delta_mib']:.0f} | {r['threads']} |")


if __name__ == "__main__":
    main()
