"""Figures of a training run (`figures/` of the run folder), drawn from saved files only.

`learning_curves.png` (each fold's `history.json`, both stages), `confusion_<condition>.png`,
`condition_level_logloss.png`, `roc_<group>.png` (one-vs-rest per severity, per condition group)
and `localization.png` (model vs the mean-position baseline, out of fold); and the loss against
learning rate of `spinegrade lr-find` (`lr_finder`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import ConfusionMatrixDisplay, roc_auc_score, roc_curve

from spinegrade.constants import CONDITION_GROUPS, CONDITION_LABELS, CONDITIONS, LEVELS, SEVERITIES
from spinegrade.data.tables import labels_long
from spinegrade.metrics import normalise_probabilities
from spinegrade.report.figures import SEVERITY_COLORS, heatmap, new_figure, save_png

#: (title, path of history.json inside fold_<k>/) of each trained network.
HISTORIES: tuple[tuple[str, str], ...] = (
    ("localiser, sagittal", "localizer/sagittal/history.json"),
    ("localiser, axial", "localizer/axial/history.json"),
    ("grader", "grader/history.json"),
)


def write_figures(
    out_dir: str | Path,
    run_dir: str | Path,
    metrics: dict[str, Any],
    localization: dict[str, Any],
    labels: pd.DataFrame,
    oof: pd.DataFrame,
) -> list[Path]:
    """Every figure of the run into `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    paths = [
        learning_curves(run_dir, metrics["folds"], out_dir / "learning_curves.png"),
        *confusion_matrices(metrics, out_dir),
        condition_level_logloss(metrics, out_dir / "condition_level_logloss.png"),
        *roc_curves(labels, oof, out_dir),
    ]
    if localization.get("model"):
        paths.append(localization_bars(localization, out_dir / "localization.png"))
    return paths


def learning_curves(
    run_dir: str | Path,
    folds: list[int],
    path: str | Path,
    histories: tuple[tuple[str, str], ...] = HISTORIES,
) -> Path:
    """Train (solid), held-out (dashed) and, with early stopping, inner-split (dotted) loss per
    epoch of each network of `histories` ((title, history.json inside fold_<k>/) pairs), one
    colour per fold."""
    fig, axes = new_figure(5 * len(histories), 3.8, 1, len(histories))
    for ax, (title, rel) in zip(axes[0], histories):
        for k in folds:
            hist_path = Path(run_dir) / f"fold_{k}" / rel
            if not hist_path.is_file():
                continue
            hist = pd.DataFrame(json.loads(hist_path.read_text(encoding="utf-8")))
            color = f"C{k % 10}"
            ax.plot(
                hist["epoch"], hist["train_loss"], color=color, marker=".", label=f"fold {k} train"
            )
            for key, ls, name in (("val_loss", "--", "held-out"), ("select_loss", ":", "inner")):
                if key in hist:
                    ax.plot(
                        hist["epoch"],
                        hist[key],
                        color=color,
                        marker=".",
                        ls=ls,
                        label=f"fold {k} {name}",
                    )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        if ax.lines:
            ax.legend(fontsize=7)
    return save_png(fig, path)


def confusion_matrices(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """`confusion_<condition>.png`: true class (rows) vs argmax (columns), counts."""
    paths = []
    for condition in CONDITIONS:
        cm = np.asarray(metrics["model"]["conditions"][condition]["confusion"])
        fig, axes = new_figure(4.2, 3.6)
        ConfusionMatrixDisplay(cm, display_labels=list(SEVERITIES)).plot(
            ax=axes[0, 0], colorbar=False, cmap="Blues"
        )
        axes[0, 0].set_title(condition.replace("_", " "), fontsize=9)
        paths.append(save_png(fig, out_dir / f"confusion_{condition}.png"))
    return paths


def condition_level_logloss(metrics: dict[str, Any], path: str | Path) -> Path:
    """Heatmap of the weighted log loss per condition (rows) and level (columns)."""
    conditions = metrics["model"]["conditions"]
    matrix = pd.DataFrame(
        [[conditions[c]["levels"][lv] for lv in LEVELS] for c in CONDITIONS],
        index=list(CONDITIONS),
        columns=list(LEVELS),
        dtype=float,
    )
    fig, axes = new_figure(6.5, 3.6)
    top = float(np.nanmax(matrix.to_numpy())) if np.isfinite(matrix.to_numpy()).any() else 1.0
    heatmap(axes[0, 0], matrix, vmin=0.0, vmax=max(top, 1e-6), cmap="Reds", annotate=True)
    axes[0, 0].set_title("weighted log loss, out of fold")
    return save_png(fig, path)


def roc_curves(labels: pd.DataFrame, oof: pd.DataFrame, out_dir: Path) -> list[Path]:
    """`roc_<group>.png`: one-vs-rest ROC curve of each severity over the group's labelled rows."""
    truth = labels_long(labels)
    truth = truth[truth["label"] >= 0].merge(oof, on="row_id", how="inner")
    probs = normalise_probabilities(truth[list(SEVERITIES)].to_numpy())
    paths = []
    for group, members in CONDITION_GROUPS.items():
        rows = truth["condition"].isin(members).to_numpy()
        fig, axes = new_figure(4.5, 4.2)
        ax = axes[0, 0]
        for k, severity in enumerate(SEVERITIES):
            y = truth["label"].to_numpy()[rows] == k
            if y.all() or not y.any():
                continue
            fpr, tpr, _ = roc_curve(y, probs[rows, k])
            ax.plot(
                fpr,
                tpr,
                color=SEVERITY_COLORS[k],
                label=f"{severity} (AUC {roc_auc_score(y, probs[rows, k]):.3f})",
            )
        if ax.lines:
            ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(
                0.5, 0.5, "no severity has both positive and negative rows", ha="center", fontsize=8
            )
        ax.set_title(f"{group}: one-vs-rest ROC ({int(rows.sum())} rows)", fontsize=9)
        paths.append(save_png(fig, out_dir / f"roc_{group}.png"))
    return paths


def localization_bars(report: dict[str, Any], path: str | Path) -> Path:
    """Bars (model vs baseline) per condition of the p90 in-plane error, slice within 1 and level
    right, from a localisation report (`spinegrade.localize.evaluate.summarize` of each)."""
    fig, axes = new_figure(15, 4.5, 1, 3)
    names = list(CONDITIONS)
    short = [CONDITION_LABELS[c].replace(" Stenosis", "").replace(" Narrowing", "") for c in names]
    x = np.arange(len(names))
    for ax, key, title in zip(
        axes[0],
        ("inplane_mm_p90", "slice_within_1", "level_right"),
        ("in-plane error, 90th percentile (mm)", "slice error <= 1", "level right"),
    ):
        for k, (who, off) in enumerate((("model", -0.2), ("baseline", 0.2))):
            vals = [report[who]["conditions"][c][key] or 0.0 for c in names]
            ax.bar(x + off, vals, width=0.4, label=who, color=("tab:blue", "tab:gray")[k])
        ax.set_xticks(x, short, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
    axes[0, 0].legend()
    fig.suptitle(f"Localisation on {report['studies']} out-of-fold studies")
    return save_png(fig, path)


def lr_finder(curves: Mapping[str, Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """Loss against learning rate (log scale) of each LR sweep, one panel per network: the raw
    loss (light), the smoothed loss (dark), the suggested rate (solid line) and the minimum's rate
    / 10 (dotted). `curves` maps a name to `spinegrade.training.lr_find.LRCurve.to_dict()`."""
    fig, axes = new_figure(5.5 * len(curves), 4.0, 1, len(curves))
    for ax, (name, c) in zip(axes[0], curves.items()):
        ax.plot(c["lrs"], c["losses"], color="tab:blue", alpha=0.3, lw=1, label="loss")
        ax.plot(c["lrs"], c["smoothed"], color="tab:blue", lw=2, label="smoothed loss")
        ax.axvline(c["suggestion"], color="tab:red", label=f"suggested {c['suggestion']:.2g}")
        ax.axvline(c["minimum_over_10"], color="0.4", ls=":", label="minimum / 10")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title(f"{name}: {c['rule']}", fontsize=9)
        ax.legend(fontsize=7)
        ax.text(0.02, 0.02, c["stopped"], transform=ax.transAxes, fontsize=7, color="0.4")
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)
