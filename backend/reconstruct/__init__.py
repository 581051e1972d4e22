"""One reference photo (or an imported LHM / 3DGS PLY) -> canonical Gaussians bound to the body.

The job-level entry point that picks import, photo fit or default sampling is
``backend.stages.subject.canonical_gaussians``; this package knows nothing of jobs.
"""

from backend.reconstruct.importer import ImportSettings, import_gaussians
from backend.reconstruct.inputs import ReferenceView, load_reference_view
from backend.reconstruct.photo_fit import PhotoFitSettings, photo_fit_settings_for, reconstruct_photo
from backend.reconstruct.surface import sample_body_gaussians, sample_surface, triangle_areas_normals

__all__ = ["ImportSettings", "PhotoFitSettings", "ReferenceView", "import_gaussians", "load_reference_view",
           "photo_fit_settings_for", "reconstruct_photo", "sample_body_gaussians", "sample_surface",
           "triangle_areas_normals"]
