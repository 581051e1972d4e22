"""Reference image -> canonical Gaussians bound to the body; default surface sampling; PLY import."""

from backend.reconstruct.surface import sample_body_gaussians, sample_surface, triangle_areas_normals

__all__ = ["sample_body_gaussians", "sample_surface", "triangle_areas_normals"]
