"""Run in the *backend* environment (.venv) by the add-on tests, as a subprocess: the add-on tests never
import torch or ``backend`` themselves.

    python body_reference.py arrays OUT.npz            # the default body's rest arrays (as body_model sends)
    python body_reference.py pose MOTION.npz OUT.npz   # pose the default body with a motion -> vertices
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from backend.body import load_body_model


def main(argv: list[str]) -> int:
    model = load_body_model("default")
    if argv[0] == "arrays":
        with torch.no_grad():
            np.savez(argv[1], rest_vertices=model.rest_vertices().numpy(), faces=model.faces.numpy(),
                     rest_joints=model.rest_joints().numpy(), skin_weights=model.skin_weights.numpy(),
                     parents=np.asarray(model.parents), joint_names=np.asarray(model.joint_names))
        return 0
    if argv[0] == "pose":
        motion = dict(np.load(argv[1]))
        t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in motion.items()}
        model = model.to(torch.float64)
        with torch.no_grad():
            out = model(t["betas"], t["root_orient"], t["pose_body"], t["trans"],
                        pose_hand=t.get("pose_hand"))
        np.savez(argv[2], vertices=out.vertices.numpy())
        return 0
    raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
