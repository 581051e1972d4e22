"""``ani3dhuman models``: which supported video priors are on this machine, and how to get the others.

Nothing is downloaded unless ``--allow-download`` is given together with ``--download ID``.
"""

from __future__ import annotations

import argparse
import json
import sys

from backend.diffusion import registry
from backend.core.errors import InputError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the supported video-prior models and whether they are present locally",
        description="List the supported Wan video priors, whether each is in the local Hugging Face cache, and "
                    "the exact id to download the missing ones. Nothing is downloaded unless --allow-download "
                    "is given with --download ID.",
    )
    parser.add_argument("--download", metavar="ID", action="append", default=[],
                        help="download this model id into the Hugging Face cache (needs --allow-download)")
    parser.add_argument("--allow-download", action="store_true", help="allow network downloads")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HOME's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.download and not args.allow_download:
        raise InputError("--download: downloading needs --allow-download (nothing is fetched without it)")
    for repo_id in args.download:
        if registry.find_model(repo_id) is None:
            known = ", ".join(m.repo_id for m in registry.SUPPORTED_MODELS)
            raise InputError(f"--download: {repo_id!r} is not a supported model; supported: {known}")
        path = registry.resolve_model_path(repo_id, allow_download=True, cache_dir=args.cache_dir)
        print(f"{repo_id}: present at {path}", file=sys.stderr)
    rows = registry.status_dicts(args.cache_dir)
    if args.json:
        print(json.dumps({"models": rows}, indent=2))
        return 0
    print(f"{'model id':44s} {'kind':5s} {'size':6s} {'cfg':>4s}  status")
    for r in rows:
        status = "present" if r["present"] else f"missing: {r['download']}"
        print(f"{r['id']:44s} {r['kind']:5s} {r['size_class']:6s} {r['default_cfg']:4.1f}  {status}")
    print("\nLarge models need an NVIDIA GPU; 1.3B models fit a 24 GB card (bf16, CPU offload, VAE tiling).")
    print("Nothing is downloaded unless you run: ani3dhuman models --allow-download --download ID")
    return 0
