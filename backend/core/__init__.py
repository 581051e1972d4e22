"""The bottom layer: errors raised at the boundaries, the progress contract and stage timer, rotation
conversions, and files that are never half-written. Imports nothing else from ``backend``."""

from backend.core.errors import Cancelled, CapabilityError, InputError
from backend.core.files import atomic_directory, check_output_parent, write_json
from backend.core.progress import ProgressEvent, ProgressFn, StageProgress, StageTimer, no_progress

__all__ = ["Cancelled", "CapabilityError", "InputError", "ProgressEvent", "ProgressFn", "StageProgress", "StageTimer",
           "atomic_directory", "check_output_parent", "no_progress", "write_json"]
