"""``ani3dhuman serve``: run the compute service (ZeroMQ ROUTER) until a shutdown request or Ctrl-C."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.core.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the compute service for the Blender add-on and scripts",
        description="Serve jobs over ZeroMQ. Loopback endpoints need no keys; any other endpoint needs CurveZMQ "
                    "(--curve-secret-key and --curve-allowed-clients) or the server refuses to start. "
                    "--make-keys DIR writes a server and a client key pair and exits.")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="endpoint to bind (default %(default)s)")
    p.add_argument("--jobs", default="jobs", help="jobs folder (default ./jobs)")
    p.add_argument("--curve-secret-key", default=None, metavar="FILE",
                   help="server certificate with its secret key (from --make-keys: server.key_secret)")
    p.add_argument("--curve-allowed-clients", default=None, metavar="FILE|DIR",
                   help="allowed client public keys: a directory of *.key certificates, one certificate, or a "
                        "file with one Z85 key per line")
    p.add_argument("--require-curve", action="store_true", help="demand CurveZMQ even on a loopback endpoint")
    p.add_argument("--max-message-mb", type=float, default=64.0, help="largest request in MiB (default 64)")
    p.add_argument("--max-frames", type=int, default=10_000, help="most motion frames per job (default 10000)")
    p.add_argument("--max-gaussians", type=int, default=2_000_000,
                   help="most Gaussians per job (default 2000000)")
    p.add_argument("--body-model", action="append", default=[], metavar="NAME=PATH",
                   help="offer an SMPL/SMPL-X model file to clients under NAME (repeatable; 'default' is always "
                        "the embedded mannequin)")
    p.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                   help="run jobs on Ray: 'local' starts a private cluster on this machine (loopback only), 'auto' "
                        "joins RAY_ADDRESS or a running cluster, or a cluster address; same protocol for clients")
    p.add_argument("--ray-parallel", type=int, default=None, help="jobs on the cluster at once (default: its CPUs)")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray cluster (default: all)")
    p.add_argument("--ray-shared-folder", action="store_true",
                   help="Ray workers write job folders into --jobs themselves (all nodes see it at the same path)")
    p.add_argument("--make-keys", default=None, metavar="DIR",
                   help="write server.key/.key_secret and client.key/.key_secret into DIR, then exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from backend.service import ServerSettings, make_keys, serve

    if args.make_keys:
        for path in make_keys(Path(args.make_keys)):
            print(path)
        return 0
    if args.max_message_mb <= 0:
        raise InputError(f"--max-message-mb: expected > 0, got {args.max_message_mb}")
    if args.max_frames < 1 or args.max_gaussians < 1:
        raise InputError("--max-frames / --max-gaussians: expected positive integers")
    body_models = {"default": "default"}
    for item in args.body_model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--body-model: expected NAME=PATH, got {item!r}")
        if name == "default":
            raise InputError("--body-model: the name 'default' is the embedded mannequin; choose another name")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--body-model {name}: model file not found: {path}")
        body_models[name] = str(Path(path).resolve())
    settings = ServerSettings(
        endpoint=args.endpoint,
        jobs_dir=Path(args.jobs),
        curve_secret_key=None if args.curve_secret_key is None else Path(args.curve_secret_key),
        curve_allowed_clients=None if args.curve_allowed_clients is None else Path(args.curve_allowed_clients),
        require_curve=args.require_curve,
        max_message_bytes=int(args.max_message_mb * (1 << 20)),
        max_frames=args.max_frames,
        max_gaussians=args.max_gaussians,
        body_models=body_models,
        ray=args.ray,
        ray_parallel=args.ray_parallel,
        ray_cpus=args.ray_cpus,
        ray_shared_folder=args.ray_shared_folder,
    )
    return serve(settings)
