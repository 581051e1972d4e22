"""Ani3DHuman for Blender: animate one photo of a person as 3D Gaussians driven by an SMPL/SMPL-X rig.

Registration only; see operators.py (UI actions), session.py (backend conversation), rig_export.py,
splat_import.py and bake.py (the work).
"""

from . import operators, panels, preferences, properties, session, splat_import

_MODULES = (preferences, properties, operators, panels)


def register() -> None:
    for module in _MODULES:
        module.register()
    splat_import.register_handlers()


def unregister() -> None:
    splat_import.unregister_handlers()
    for module in reversed(_MODULES):
        module.unregister()
    session.stop_backend(timeout_s=5.0)  # a backend started from this Blender does not outlive the add-on
    session.reset()
    session.close_clients()
