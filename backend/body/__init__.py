"""Body models: the embedded default (mannequin-x) and SMPL/SMPL-X files via smplx; pure ``lbs`` functions;
body-part labels."""

from backend.body.lbs import forward_kinematics, skin_points
from backend.body.loading import load_body_model
from backend.body.model import BodyModel, BodyOutput
from backend.body.parts import PART_NAMES, identity_critical, part_ids_from_weights

__all__ = ["PART_NAMES", "BodyModel", "BodyOutput", "forward_kinematics", "identity_critical", "load_body_model",
           "part_ids_from_weights", "skin_points"]
