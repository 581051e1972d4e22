#!/usr/bin/env bash
# Set up, then run the main job on embedded defaults; results under out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/ani3dhuman demo --out out/demo "$@"
