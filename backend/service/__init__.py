"""The compute service: a ZeroMQ server in front of a job queue, its settings, request handling, security
(CurveZMQ) and the on-disk job store. The only package with sockets and threads; it speaks ``backend.wire``.
"""

from backend.service.jobstore import JobStore
from backend.service.security import make_keys
from backend.service.server import Server, serve
from backend.service.settings import ServerSettings

__all__ = ["JobStore", "Server", "ServerSettings", "make_keys", "serve"]
