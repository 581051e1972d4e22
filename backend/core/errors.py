"""Errors raised at the boundaries: bad user input vs. a missing capability."""


class InputError(ValueError):
    """Bad input from a user or a client: one line, names the field, expected and actual (CLI exit 2)."""


class CapabilityError(RuntimeError):
    """Something this machine cannot do (no CUDA, missing weights): says what is needed (CLI exit 2)."""


class Cancelled(Exception):
    """Raised from a progress callback to stop a running stage at the next safe point."""
