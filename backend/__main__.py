"""``python -m backend`` / ``ani3dhuman``: the command line."""

from backend.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
