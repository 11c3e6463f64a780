"""Rewrite the bundled label model (`src/spinegrade/data/synthetic/label_model.json`) from the
real RSNA label files: `train.csv` and `train_series_descriptions.csv` in one folder.

    .venv/bin/python scripts/fit_label_model.py RSNA_DIR [--out PATH]

Only aggregates are written (class and blank counts per target, latent correlations, series-layout
counts), never a label row. The test `tests/data/synthetic/test_label_model.py` checks, where the
real files are at hand, that the shipped file equals what this script writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spinegrade.data.synthetic.label_model import MODEL_JSON, fit_label_model
from spinegrade.data.synthetic.source import RealLabels
from spinegrade.errors import SpinegradeError


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("rsna_dir", type=Path, help="folder with the real train.csv")
    parser.add_argument("--out", type=Path, default=MODEL_JSON, help="JSON to write")
    args = parser.parse_args()
    try:
        real = RealLabels.load(args.rsna_dir)
        model = fit_label_model(real.rows, real.layouts)
        path = model.save(args.out)
    except SpinegradeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{model.name} from {model.n_studies} studies of {real.name} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
