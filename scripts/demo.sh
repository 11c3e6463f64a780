#!/usr/bin/env bash
# Set up .venv (if needed) and run the demo: synthetic studies -> train -> evaluate -> predict -> report.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/spinegrade demo "$@"
