"""Who may talk to the service: the loopback rule and CurveZMQ keys (no sockets, no threads).

Loopback endpoints need no keys. Any other endpoint needs a server key pair and a list of allowed client public
keys, checked by a ZAP authenticator that ``backend.service.server`` starts; otherwise the server refuses to start.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from backend.core.errors import InputError

if TYPE_CHECKING:
    from backend.service.settings import ServerSettings

log = logging.getLogger(__name__)



def is_loopback_endpoint(endpoint: str) -> bool:
    """True when only this machine can reach ``endpoint``: ``ipc://``, ``inproc://``, or ``tcp://`` bound to
    127.0.0.0/8, ``::1`` or ``localhost``. Wildcards (``*``, ``0.0.0.0``), interface names and other hosts
    are not loopback."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp" or not rest:
        return False
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    host = host.split(";")[-1]  # "tcp://source;dest" binds dest
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(settings: ServerSettings) -> None:
    """Refuse, before binding, an endpoint that would expose the service without CurveZMQ.

    Raises:
        InputError: bad endpoint scheme, or a non-loopback endpoint (or ``require_curve``) without keys.
    """
    scheme = settings.endpoint.partition("://")[0]
    if scheme not in ("tcp", "ipc", "inproc") or "://" not in settings.endpoint:
        raise InputError(f"endpoint: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME, "
                         f"got {settings.endpoint!r}")
    keys = settings.curve_secret_key is not None and settings.curve_allowed_clients is not None
    partial = (settings.curve_secret_key is None) != (settings.curve_allowed_clients is None)
    if partial:
        raise InputError("CurveZMQ: --curve-secret-key and --curve-allowed-clients must be given together")
    if not keys and not is_loopback_endpoint(settings.endpoint):
        raise InputError(f"endpoint {settings.endpoint} is not loopback: refusing to serve it without CurveZMQ "
                         f"(give --curve-secret-key and --curve-allowed-clients)")
    if not keys and settings.require_curve:
        raise InputError("require_curve: CurveZMQ demanded but no keys given "
                         "(--curve-secret-key and --curve-allowed-clients)")


def load_server_keys(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ZeroMQ certificate file.

    Raises:
        InputError: unreadable file or no secret key in it.
    """
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"curve secret key {path}: cannot read a ZeroMQ certificate ({exc})") from None
    if not secret:
        raise InputError(f"curve secret key {path}: the file has no secret-key (use the .key_secret file)")
    return public, secret


def load_allowed_clients(path: Path) -> set[bytes]:
    """Allowed client public keys (Z85) from a directory of certificates, one certificate, or a key list.

    Raises:
        InputError: nothing readable, or a line that is not a 40-character Z85 key.
    """
    import zmq.auth

    path = Path(path)
    keys: set[bytes] = set()
    if path.is_dir():
        for cert in sorted(path.iterdir()):
            if cert.suffix in (".key", ".key_secret"):
                keys.add(load_allowed_clients(cert).pop())
    elif path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
        if "public-key" in text:
            try:
                keys.add(zmq.auth.load_certificate(str(path))[0])
            except (OSError, ValueError) as exc:
                raise InputError(f"curve allowed clients {path}: bad certificate ({exc})") from None
        else:
            for number, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if len(line) != 40:
                    raise InputError(f"curve allowed clients {path}:{number}: expected a 40-character Z85 "
                                     f"public key, got {len(line)} characters")
                keys.add(line.encode("ascii"))
    else:
        raise InputError(f"curve allowed clients: {path} does not exist")
    if not keys:
        raise InputError(f"curve allowed clients {path}: no public keys found")
    return keys


def make_keys(directory: Path) -> list[Path]:
    """Write a server and a client CurveZMQ key pair (``server.key``, ``server.key_secret``, ``client.key``,
    ``client.key_secret``) into ``directory``; returns the paths. Secret files are readable by the owner only."""
    import zmq.auth

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("server", "client"):
        public, secret = zmq.auth.create_certificates(str(directory), name)
        os.chmod(secret, 0o600)
        paths += [Path(public), Path(secret)]
    return paths


class AllowedKeys:
    """ZAP credentials provider: accepts exactly the listed client public keys."""

    def __init__(self, keys: set[bytes]):
        self.keys = frozenset(keys)
        self._refused: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self.keys
        if not allowed and key not in self._refused and len(self._refused) < 1000:
            self._refused.add(key)  # once per key: a refused client keeps reconnecting
            log.warning("CurveZMQ: refused a client with unknown public key %s", key.decode("ascii", "replace"))
        return allowed
