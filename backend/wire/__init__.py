"""The wire between the compute service and its clients: the protocol (JSON header + raw array buffers over
ZeroMQ, no pickle) and the client library. stdlib + numpy + pyzmq only, relative imports only: this package is
the single source of truth and is vendored, byte for byte, into the add-on as ``blender_addon/wire/``
(``scripts/vendor_wire.py``), so it must never import torch, bpy or anything else from ``backend``.
"""

from .client import DEFAULT_ENDPOINT, Client, CurveKeys, ServiceError, ServiceTimeout
from .protocol import PROTOCOL_VERSION, Message, ProtocolError, decode, encode

__all__ = ["DEFAULT_ENDPOINT", "PROTOCOL_VERSION", "Client", "CurveKeys", "Message", "ProtocolError", "ServiceError",
           "ServiceTimeout", "decode", "encode"]
