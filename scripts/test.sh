#!/usr/bin/env bash
# Set up .venv (if needed) and run the whole test suite, slow end-to-end tests included.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
bash "$root/scripts/system-packages.sh"  # Orthanc, dciodvfy, dsrdump where apt can install them
cd "$root"
exec .venv/bin/python -m pytest -n 2 --dist loadscope --timeout 1200 "$@"
