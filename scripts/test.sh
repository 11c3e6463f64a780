#!/usr/bin/env bash
# Set up .venv (if needed), lint, and run the whole test suite, slow end-to-end tests included.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
bash "$root/scripts/system-packages.sh"  # Orthanc, dciodvfy, dsrdump where apt can install them
cd "$root"
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/ruff format --check --quiet src tests benchmarks scripts
# --dist loadscope: a module's tests share one worker, so a module's expensive fixture is built once
exec .venv/bin/python -m pytest -n 2 --dist loadscope --timeout 1200 "$@"
