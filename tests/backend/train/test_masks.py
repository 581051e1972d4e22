"""Subject masks of restored videos, and the mask term pulling an inflated silhouette back."""

from __future__ import annotations

import pytest
import torch

from backend.train.masks import restored_subject_masks

pytestmark = pytest.mark.unit


def test_mask_sources_inside_band_and_outside():
    alpha = torch.zeros(1, 40, 40, 1)
    alpha[:, 10:30, 10:30] = 1.0  # the coarse silhouette
    restored = torch.ones(1, 40, 40, 3)  # white background
    restored[:, 10:20, 10:30] = 0.2  # the person, upper half in view...
    restored[:, 20:30, 10:30] = 1.0  # ...lower half repainted in the background colour (must not make a hole)
    restored[:, 30:33, 10:30] = 0.4  # cloth that swung out below the silhouette, inside the band
    restored[:, 0:3, 0:3] = 0.0  # an artefact far from the subject
    mask = restored_subject_masks(restored, alpha, (1.0, 1.0, 1.0), band=0.1)  # 4 px band
    m = mask[0, ..., 0]
    assert m.shape == (40, 40) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert bool(m[14:26, 14:26].all())  # the shrunk silhouette is always subject
    assert bool(m[30:33, 10:30].all())  # moved cloth in the band counts
    assert not bool(m[0:3, 0:3].any())  # far artefacts do not
    assert float(m[27:30, 14:26].sum()) == 0.0
    assert not bool(m[35:, :].any())


def test_mask_term_pulls_an_inflated_silhouette_back(default_body):
    """White subject over white: colour cannot see the silhouette, only the mask term can."""
    from backend.gaussians.container import rgb_to_sh_dc
    from backend.motion.layered import layered_frame
    from backend.motion.residual import ResidualField, normalized_time
    from backend.render import RenderSettings, render
    from backend.train.dataset import VideoClip, VideoDataset
    from backend.train.field_fit import create_fit_state, fit_field
    from backend.train.recovery import (RecoverySettings, build_recovery_scene, recovery_field_config,
                                        recovery_fit_settings)

    scene = build_recovery_scene(RecoverySettings(body_gaussians=500, skirt_gaussians=200, motion_frames=9,
                                                  trajectories=2, width=32, height=48, held_out_views=1),
                                 body=default_body)
    white = rgb_to_sh_dc(torch.ones(scene.canonical.num_gaussians, 3))[:, None]
    truth = scene.canonical.replace(sh=white.to(scene.canonical.sh.dtype))
    away = truth.means - truth.means.mean(0)
    away[:, 1] = 0.0  # rest pose is Y-up: push outwards in the horizontal plane
    inflated = truth.replace(means=truth.means + 0.04 * torch.nn.functional.normalize(away, dim=-1))
    rs = RenderSettings(background=(1.0, 1.0, 1.0))
    clips = []
    for clip in scene.dataset.clips:  # the truth's frames (all white) and silhouettes
        with torch.no_grad():
            outs = [render(layered_frame(truth, None, scene.joint_transforms[f], 0.0), clip.cameras[i:i + 1],
                           settings=rs) for i, f in enumerate(clip.motion_frames.tolist())]
        clips.append(VideoClip(clip.name, torch.cat([o.rgb for o in outs]), clip.cameras, clip.motion_frames,
                               masks=torch.cat([o.alpha for o in outs]).round()))
    dataset = VideoDataset(clips, scene.dataset.num_motion_frames)

    def outside_after(lambda_mask: float) -> float:
        config = recovery_field_config(scene, spatial_resolution=8, temporal_resolution=5, features=4, hidden=16)
        field = ResidualField(config, torch.Generator().manual_seed(0))
        settings = recovery_fit_settings(iterations=60, lambda_mask=lambda_mask, identity_weight=0.0,
                                         body_weight=0.0, report_every=60)
        state = create_fit_state(field, settings, seed=1)
        fit_field(state, inflated, scene.joint_transforms, dataset, settings)
        total = 0.0
        with torch.no_grad():
            for clip in clips:
                for i, f in enumerate(clip.motion_frames.tolist()):
                    t = normalized_time(f, dataset.num_motion_frames).item()
                    a = render(layered_frame(inflated, state.field, scene.joint_transforms[f], t),
                               clip.cameras[i:i + 1], settings=rs).alpha[0]
                    total += float((a * (1 - clip.masks[i])).sum())
        return total

    without, with_mask = outside_after(0.0), outside_after(1.0)
    assert with_mask < 0.6 * without, (with_mask, without)
