"""Fitting the residual field to videos: the video dataset (PNG frames + cameras.json per clip), the losses, the
fit loop with checkpoints (``field_fit``), and a known-truth recovery scene to prove it on. Knows nothing of jobs
or priors: ``backend.stages`` runs the paper's rounds on top of it."""

from backend.train.dataset import VideoClip, VideoDataset, load_videos, read_clip, write_clip
from backend.train.field_fit import FieldFitSettings, FitState, create_fit_state, fit_field

__all__ = ["FieldFitSettings", "FitState", "VideoClip", "VideoDataset", "create_fit_state", "fit_field",
           "load_videos", "read_clip", "write_clip"]
