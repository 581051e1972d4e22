#!/usr/bin/env python3
"""Vendor the wire protocol and client (``backend/wire/``) into the add-on as ``blender_addon/wire/``.

``backend/wire`` is the single source of truth for the wire: the service and scripts import it as
``backend.wire``, the add-on as its own subpackage ``<addon>.wire`` (Blender's Python has no ``backend`` and
must not import it). The copy is made, never committed: ``scripts/build_addon.py`` vendors into the staged
extension, the add-on tests and ``scripts/setup.sh`` vendor into the source tree (git ignores it). The modules
import each other relatively and depend on stdlib + numpy + pyzmq only, so the copy is byte-identical.

    python scripts/vendor_wire.py [ADDON_DIR]     # default: blender_addon/ of this checkout
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIRE_SOURCE = REPO / "backend" / "wire"
WIRE_MODULES = ("__init__.py", "protocol.py", "client.py")


def vendor_wire(addon_dir: str | Path = REPO / "blender_addon") -> Path:
    """Copy ``backend/wire/*.py`` into ``addon_dir/wire/`` (replacing what is there); returns that folder."""
    target = Path(addon_dir) / "wire"
    staging = target.with_name(".wire.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in WIRE_MODULES:
        shutil.copy2(WIRE_SOURCE / name, staging / name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


if __name__ == "__main__":
    print(vendor_wire(*sys.argv[1:2]))
