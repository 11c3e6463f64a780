"""The `spinegrade` command line: a thin Typer layer over the Python API.

Every command parses its arguments, calls one API function and prints the result. Expected failures
(`SpinegradeError`) are printed as one line `error: ...` with exit status 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from spinegrade.errors import SpinegradeError

if TYPE_CHECKING:
    from spinegrade.config import Config

app = typer.Typer(
    name="spinegrade",
    help="Lumbar spine degeneration grading from MRI (RSNA 2024 LSDC): localise, then grade.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_USAGE_ERROR = 2


def main() -> None:
    """Console-script entry point: run the app, turning expected failures into one line."""
    try:
        app()
    except SpinegradeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE_ERROR)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


# Commands are added below, each a few lines over its API function.


def _fold_list(folds: str | None) -> list[int] | None:
    """`--folds 0,1` -> [0, 1] (None: all); a ConfigError for anything else."""
    from spinegrade.errors import ConfigError

    try:
        return None if folds is None else [int(f) for f in folds.split(",") if f.strip()]
    except ValueError:
        raise ConfigError(
            f"--folds {folds!r}: expected fold numbers separated by commas, e.g. 0,1"
        ) from None


@app.command()
def score(
    labels: Annotated[Path, typer.Option("--labels", help="train.csv-like labels file")],
    submission: Annotated[Path, typer.Option("--submission", help="submission CSV to score")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Score a submission with the challenge metric (four weighted log losses and their mean)."""
    import json

    from rich.table import Table

    from spinegrade.metrics import score_files

    result = score_files(labels, submission)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    table = Table("term", "log loss", "rows scored", title=f"score of {submission.name}")
    for term, value in result.terms.items():
        table.add_row(term, f"{value:.4f}", str(result.n_rows[term]))
    table.add_row("[bold]score[/]", f"[bold]{result.score:.4f}[/]", "")
    console.print(table)


@app.command()
def validate(
    data_root: Annotated[
        Path, typer.Argument(help="RSNA folder (train.csv, *_series_descriptions.csv, ...)")
    ],
    split: Annotated[str, typer.Option(help="'train' or 'test'")] = "train",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Check the RSNA label tables; exit 0 with only warnings, 1 with errors."""
    import json

    from rich.table import Table

    from spinegrade.data.tables import load_tables, validate_tables

    report = validate_tables(load_tables(data_root, split))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        table = Table("severity", "problem", "count", "example", title=f"validation of {data_root}")
        for p in report.problems:
            style = "red" if p.severity == "error" else "yellow"
            table.add_row(
                f"[{style}]{p.severity}[/]",
                p.kind,
                str(p.count),
                p.examples[0] if p.examples else "",
            )
        if report.problems:
            console.print(table)
        if report.images is not None:
            console.print(report.images.summary(), soft_wrap=True, highlight=False)
        console.print(
            f"{data_root} ({split}): {len(report.errors)} error(s), "
            f"{len(report.warnings)} warning(s)",
            soft_wrap=True,
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def inspect(
    data_root: Annotated[
        Path, typer.Argument(help="RSNA folder (train.csv, ..., optional train_images/)")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="folder for report.html, PNGs and facts.json")
    ],
    workers: Annotated[int, typer.Option(help="worker processes reading DICOM headers")] = 2,
) -> None:
    """Dataset inspection: label statistics, series, DICOM headers, positions, problems (HTML)."""
    from spinegrade.report.inspect import inspect_dataset, summary_table

    result = inspect_dataset(data_root, out, workers=workers)
    console.print(summary_table(result))
    console.print(f"report: {result.report}")


localize_app = typer.Typer(
    help="Stage 1: find the series, slice and pixel of each of the 25 targets.",
    no_args_is_help=True,
)
app.add_typer(localize_app, name="localize")
ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help="config name (tiny, demo, full) or YAML path")
]
#: Every command that takes a config takes its overrides the same way: trailing `key=value`
#: arguments.
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="config overrides key=value, e.g. grade.optim.epochs=3", show_default=False
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output folder (re-running resumes it)")]
FoldOpt = Annotated[int, typer.Option(help="held-out fold: train on the others, evaluate on it")]


def _config_and_fold(
    data_root: Path, config: str, overrides: list[str] | None, fold: int
) -> tuple[Config, list[int], list[int]]:
    """The config with its overrides, and the (training, held-out) study ids of `fold`."""
    from spinegrade.config import load_config
    from spinegrade.localize.train import fold_split

    cfg = load_config(config, overrides or [])
    return (cfg, *fold_split(data_root, cfg, fold))


@localize_app.command("train")
def localize_train(
    data_root: Annotated[
        Path, typer.Argument(help="RSNA folder with train_images/ and the label CSVs")
    ],
    out: OutOpt,
    config: ConfigOpt = "demo",
    fold: FoldOpt = 0,
    overrides: OverridesArg = None,
) -> None:
    """Train the sagittal and axial heatmap models on every fold but `--fold`."""
    from spinegrade.config import save_config
    from spinegrade.localize.train import train_localizer

    cfg, train_ids, held = _config_and_fold(data_root, config, overrides, fold)
    save_config(cfg, out / "config.yaml")
    console.print(
        f"training on {len(train_ids)} studies, fold {fold} ({len(held)} studies) held out"
    )
    console.print(f"localiser: {train_localizer(data_root, train_ids, out, cfg)}")


@localize_app.command("evaluate")
def localize_evaluate(
    data_root: Annotated[
        Path, typer.Argument(help="RSNA folder with train_images/ and the label CSVs")
    ],
    model: Annotated[Path, typer.Argument(help="folder written by `localize train`")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="report folder (default: <model>/eval)")
    ] = None,
    config: ConfigOpt = "demo",
    fold: FoldOpt = 0,
    overrides: OverridesArg = None,
) -> None:
    """Localisation report on the held-out fold, with the mean-position baseline in the same run."""
    from rich.table import Table

    from spinegrade.localize.evaluate import evaluate_localizer

    cfg, train_ids, held = _config_and_fold(data_root, config, overrides, fold)
    out = out or model / "eval"
    report = evaluate_localizer(data_root, model, held, train_ids, out, cfg)
    table = Table(
        "group",
        "who",
        "points",
        "missed",
        "median mm",
        "p90 mm",
        "slice<=1",
        "level right",
        "swaps",
        title=f"localisation, {report['studies']} held-out studies (fold {fold})",
    )
    for group in report["model"]["groups"]:
        for who in ("model", "baseline"):
            s = report[who]["groups"][group]
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            table.add_row(
                group,
                who,
                str(s["points"]),
                str(s["missed"]),
                fmt(s["inplane_mm_median"], ".2f"),
                fmt(s["inplane_mm_p90"], ".2f"),
                fmt(s["slice_within_1"], ".1%"),
                fmt(s["level_right"], ".1%"),
                str(s["swaps"]),
            )
    console.print(table)
    console.print(f"report: {out}")


@localize_app.command("predict")
def localize_predict(
    model: Annotated[Path, typer.Argument(help="folder written by `localize train`")],
    studies: Annotated[
        list[Path], typer.Argument(help="study folders (<study_id>/<series_id>/*.dcm)")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="CSV to write (train_label_coordinates style)")
    ],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
) -> None:
    """Locate the 25 targets of each study; unreadable studies are skipped and listed."""
    from spinegrade.localize.evaluate import to_coordinates_csv
    from spinegrade.localize.predict import locate_studies

    table, failed = locate_studies(model, studies, device=device)
    for folder, why in failed.items():
        err_console.print(f"skipped {folder}: {why}", soft_wrap=True, highlight=False)
    to_coordinates_csv(table, out)
    located = int((table["reason"] == "").sum()) if len(table) else 0
    console.print(
        f"{out}: {len(table)} targets of {len(studies) - len(failed)} studies, {located} located"
    )


@app.command()
def train(
    data_root: Annotated[
        Path,
        typer.Argument(
            help="RSNA folder: train.csv, *_series_descriptions.csv, "
            "train_label_coordinates.csv, train_images/"
        ),
    ],
    out: OutOpt,
    overrides: OverridesArg = None,
    config: Annotated[
        str, typer.Option("--config", "-c", help="config name (tiny, demo, full) or YAML path")
    ] = "demo",
    folds: Annotated[
        str | None, typer.Option(help="train only these folds, e.g. 0,1 (default: all)")
    ] = None,
) -> None:
    """Cross-validate both stages: per fold train the localiser and the grader, predict out of fold,
    then evaluate. Works under `torchrun --nproc-per-node N -m spinegrade train ...` (DDP)."""
    from spinegrade.config import load_config
    from spinegrade.cv.evaluate import metrics_table
    from spinegrade.cv.train import train as train_run

    cfg = load_config(config, overrides or [])
    summary = train_run(data_root, out, cfg, folds=_fold_list(folds))
    if summary.rank == 0:
        console.print(metrics_table(summary.metrics))
        console.print(
            f"{out}: trained folds {summary.folds_trained}, reused {summary.folds_reused}, "
            f"{len(summary.failed_studies)} unreadable studies, {summary.seconds:.0f} s",
            soft_wrap=True,
        )


FoldsOpt = Annotated[
    str | None, typer.Option(help="only these folds, e.g. 0,1 (default: all)", show_default=False)
]


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="run folder written by `spinegrade train`")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="RSNA folder with train.csv (default: the one recorded in run.json)"
        ),
    ] = None,
) -> None:
    """Recompute metrics.json, localization.json and figures/ from a run's out-of-fold
    predictions."""
    from spinegrade.cv.evaluate import evaluate as evaluate_run
    from spinegrade.cv.evaluate import metrics_table

    console.print(metrics_table(evaluate_run(run_dir, data_root=data)))
    console.print(f"metrics: {run_dir / 'metrics.json'}, figures: {run_dir / 'figures'}")


@app.command("lr-find")
def lr_find(
    data_root: Annotated[
        Path, typer.Argument(help="RSNA folder with train_images/ and the label CSVs")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="folder for lr_find_<stage>.png and .json")
    ],
    stage: Annotated[str, typer.Option("--stage", help="the stage to sweep: grade or localize")],
    config: ConfigOpt = "demo",
    start: Annotated[float, typer.Option(help="learning rate of the first step")] = 1e-6,
    end: Annotated[float, typer.Option(help="learning rate of the last step")] = 1.0,
    steps: Annotated[int, typer.Option(help="steps of the sweep (fewer if it diverges)")] = 100,
    overrides: OverridesArg = None,
) -> None:
    """Learning-rate range test of one stage on the training studies of fold 0: the loss against
    the learning rate (figure and JSON) and a suggested `<stage>.optim.lr`."""
    from rich.table import Table

    from spinegrade.config import load_config
    from spinegrade.cv.lr_find import find_lr

    cfg = load_config(config, overrides or [])
    result = find_lr(data_root, out, cfg, stage, start=start, end=end, steps=steps)
    table = Table(
        "network",
        "steps",
        "steepest descent",
        "minimum / 10",
        "suggested",
        "stopped because",
        title=f"LR range test, {stage}, {result.train_studies} training studies of fold 0",
    )
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    for name, c in result.curves.items():
        table.add_row(
            name,
            str(len(c.lrs)),
            fmt(c.steepest),
            fmt(c.minimum_over_10),
            fmt(c.suggestion),
            c.stopped,
        )
    console.print(table)
    console.print(
        f"suggested: {result.override}\nfigure: {result.figure}\ncurves: {result.curves_json}",
        soft_wrap=True,
        highlight=False,
    )


@app.command()
def compare(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="finished run folders, each with its metrics.json")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="PNG of the comparison, or a folder to hold compare.png (optional)"
        ),
    ] = None,
) -> None:
    """Finished runs side by side: the score, its four terms and per-condition figures ('-' where
    a run has no such figure)."""
    from spinegrade.cv.compare import compare_runs, comparison_figure, comparison_table

    frame = compare_runs(run_dirs)
    console.print(comparison_table(frame))
    if out is not None:
        png = out / "compare.png" if out.is_dir() or not out.suffix else out
        console.print(f"figure: {comparison_figure(frame, png)}", soft_wrap=True, highlight=False)


@app.command()
def synth(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="new (or empty) folder for the synthetic RSNA-format studies"
        ),
    ],
    studies: Annotated[int, typer.Option("--studies", help="number of studies")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed: same bytes)")] = 0,
    size: Annotated[
        str, typer.Option("--size", help="'small' (fast, ~128 px) or 'full' (256-640 px)")
    ] = "small",
    workers: Annotated[
        int, typer.Option("--workers", help="worker processes (0: in this process)")
    ] = 0,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            "--labels-root",
            help="folder with the real train.csv (default: $SPINEGRADE_RSNA_DIR or "
            "../shared/data/rsna "
            "if found, else the bundled label model)",
        ),
    ] = None,
    reader_noise: Annotated[
        float | None,
        typer.Option(
            "--reader-noise", help="label noise s of the latent model (default: calibrated)"
        ),
    ] = None,
) -> None:
    """Generate synthetic studies in the RSNA layout with oracle.csv; print the label source and
    the oracle's score."""
    from rich.table import Table

    from spinegrade.data.synthetic import READER_NOISE, generate

    summary = generate(
        out_dir,
        studies,
        seed,
        size=size,
        workers=workers,
        labels=labels,
        reader_noise=READER_NOISE if reader_noise is None else reader_noise,
    )
    table = Table("what", "value", title=f"synthetic studies in {out_dir}")
    for name, value in summary.table():
        table.add_row(name, value)
    console.print(table)
    console.print(f"labels drawn from: {summary.label_source}", soft_wrap=True, highlight=False)


@app.command("dicom-info")
def dicom_info(
    path: Annotated[
        Path,
        typer.Argument(help="a study folder (<study_id>/<series_id>/*.dcm) or one series folder"),
    ],
    workers: Annotated[
        int, typer.Option(help="worker processes reading series (0: in this process)")
    ] = 0,
    descriptions: Annotated[
        Path | None,
        typer.Option(
            help="a *_series_descriptions.csv to type the series by (default: the headers)"
        ),
    ] = None,
) -> None:
    """Read a study or series and print its stacks: type (and how it was decided), size, spacing,
    normal, instance numbers."""
    from rich.table import Table

    from spinegrade.data.tables import read_series
    from spinegrade.dicom.study import describe

    table = None if descriptions is None else read_series(descriptions)
    rows, skipped = describe(path, table, workers=workers)
    table = Table(*rows[0].keys(), title=str(path))
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    for line in skipped:
        err_console.print(f"skipped: {line}", highlight=False, soft_wrap=True)


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="run folder written by `spinegrade train`")],
    studies: Annotated[
        Path | None,
        typer.Argument(
            help="RSNA test_images/ or train_images/ folder, one study folder, or a folder of "
            "DICOM files in any arrangement (not with --dicomweb)",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="output folder (submission.csv, errors.csv, index.html, studies/<id>/...)",
        ),
    ] = ...,
    workers: Annotated[
        int | None,
        typer.Option(
            help="worker processes reading studies and writing reports (0: all in this process; "
            "default: 0 for one study or one core, else half the cores, at least 2, at most 4)",
            show_default=False,
        ),
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="average with the left/right-flipped crops")
    ] = False,
    fail_on_error: Annotated[
        bool,
        typer.Option(
            "--fail-on-error",
            help="exit with status 1 when any study could not be read or predicted "
            "(the outputs are still written; default: exit 0 and list them in "
            "errors.csv)",
        ),
    ] = False,
    series_descriptions: Annotated[
        Path | None,
        typer.Option(
            "--series-descriptions",
            help="*_series_descriptions.csv (default: the one beside the images folder, if any)",
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda, cuda:N (default: the run's)")
    ] = None,
    folds: Annotated[
        str | None, typer.Option(help="use only these folds, e.g. 0,1 (default: all)")
    ] = None,
    dicom_out: Annotated[
        bool,
        typer.Option(
            "--dicom-out",
            help="also write each study's DICOM SR and overlay images "
            "(studies/<id>/dicom/; always on with --dicomweb)",
        ),
    ] = False,
    dicomweb: Annotated[
        str | None,
        typer.Option(
            "--dicomweb",
            help="DICOMweb root of a PACS (e.g. http://localhost:8042/dicom-web): "
            "fetch the --study studies from it instead of a folder; credentials "
            "from SPINEGRADE_DICOMWEB_TOKEN or SPINEGRADE_DICOMWEB_USER/_PASSWORD",
            show_default=False,
        ),
    ] = None,
    study: Annotated[
        list[str] | None,
        typer.Option(
            "--study",
            help="StudyInstanceUID to fetch with --dicomweb (repeat for several)",
            show_default=False,
        ),
    ] = None,
    store: Annotated[
        bool,
        typer.Option(
            "--store",
            help="with --dicomweb: store the SR and overlays back into each study (STOW-RS)",
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="what runs the networks: torch (the checkpoints) or onnx (ONNX Runtime on the "
            "networks of `spinegrade export`)"
        ),
    ] = "torch",
    onnx_dir: Annotated[
        Path | None,
        typer.Option(
            "--onnx-dir",
            help="with --engine onnx: the folder `spinegrade export` wrote (default: RUN_DIR/onnx)",
            show_default=False,
        ),
    ] = None,
    cam: Annotated[
        bool,
        typer.Option(
            "--cam/--no-cam",
            help="also a Grad-CAM map per graded target: where in its crop the predicted severity "
            "came from (studies/<id>/cam/, in predictions.json and report.html; from the torch "
            "checkpoints, also with --engine onnx)",
        ),
    ] = False,
) -> None:
    """Predict the 25 targets of every study: submission.csv, predictions.json, overlays, HTML
    reports.

    A study that cannot be read gets the trained prior, a row in errors.csv, and the batch goes on.
    With --dicomweb the studies come from a PACS, and any failure stops with one line and exit 2.
    """
    import pandas as pd

    from spinegrade.errors import ConfigError

    wanted = _fold_list(folds)
    if (studies is None) == (dicomweb is None):
        raise ConfigError("give either a STUDIES folder or --dicomweb URL with --study UID")
    if dicomweb is None and (study or store):
        raise ConfigError("--study and --store go with --dicomweb URL")
    if onnx_dir is not None and engine != "onnx":
        raise ConfigError("--onnx-dir goes with --engine onnx")
    common = dict(
        workers=workers,
        tta=tta,
        device=device,
        folds=wanted,
        engine=engine,
        onnx_dir=onnx_dir,
        cam=cam,
    )
    if dicomweb is not None:
        from spinegrade.inference.dicomweb import predict_dicomweb

        web = predict_dicomweb(run_dir, dicomweb, study or [], out, store=store, **common)
        result = web.predict
        for uid, sid in web.study_ids.items():
            stored = f", {len(web.stored[uid])} instance(s) stored" if uid in web.stored else ""
            console.print(
                f"study {uid}: {out / 'studies' / str(sid)}{stored}",
                soft_wrap=True,
                highlight=False,
            )
    else:
        from spinegrade.inference import predict as run_predict

        result = run_predict(
            run_dir,
            studies,
            out,
            fail_on_error=fail_on_error,
            series_descriptions=series_descriptions,
            dicom_out=dicom_out,
            **common,
        )
    failed = result.failed
    for row in failed.itertuples():
        who = "file" if pd.isna(row.study_id) else f"study {row.study_id}"
        err_console.print(f"{who}: {row.path}: {row.reason}", highlight=False, soft_wrap=True)
    per = "  ".join(
        f"{k} {v / max(len(result.study_ids), 1):.2f}" for k, v in result.timing.wall.items()
    )
    console.print(
        f"{len(result.study_ids)} studies ({int(failed.study_id.notna().sum())} failed) in "
        f"{result.wall_s:.1f} s, {result.studies_per_s:.2f} studies/s; s/study: {per}",
        soft_wrap=True,
    )
    console.print(
        f"submission: {result.submission}\nreports: {result.index}\nerrors: {result.errors}",
        soft_wrap=True,
        highlight=False,
    )
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="run folder written by `spinegrade train`")],
    onnx: Annotated[
        Path | None,
        typer.Option(
            "--onnx",
            help="output folder for the ONNX networks and manifest.json (default: RUN_DIR/onnx)",
            show_default=False,
        ),
    ] = None,
    folds: Annotated[
        str | None, typer.Option(help="export only these folds, e.g. 0,1 (default: all complete)")
    ] = None,
) -> None:
    """Export every complete fold's networks (localiser sagittal and axial, grader) to ONNX, with a
    manifest tying them to the run folder; `predict --engine onnx` runs them."""
    from spinegrade.cv.export import export_run
    from spinegrade.cv.folder import RunFolder

    manifest = export_run(run_dir, onnx or RunFolder(run_dir).onnx_dir(), folds=_fold_list(folds))
    console.print(f"ONNX networks and manifest: {manifest}", soft_wrap=True, highlight=False)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="demo folder (re-running resumes and reuses it)")
    ] = Path("spinegrade-demo"),
    thorough: Annotated[
        bool,
        typer.Option(
            "--thorough",
            help="the longer demo of spinegrade 0.1: 80 studies and the "
            "`demo` config (about 30 min on 2 cores)",
        ),
    ] = False,
    studies: Annotated[
        int | None,
        typer.Option(
            "--studies",
            help="synthetic training studies (default: 48; 80 with --thorough)",
            show_default=False,
        ),
    ] = None,
    test_studies: Annotated[
        int | None,
        typer.Option(
            "--test-studies",
            help="held-out synthetic studies to predict (default: 10)",
            show_default=False,
        ),
    ] = None,
    folds: Annotated[
        int | None,
        typer.Option("--folds", help="cross-validation folds (default: 2)", show_default=False),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="training config (default: quick; demo with --thorough; or tiny, or a YAML path)",
            show_default=False,
        ),
    ] = None,
    overrides: OverridesArg = None,
    seed: Annotated[
        int, typer.Option(help="seed of the training set (held-out set: seed + 1)")
    ] = 0,
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
) -> None:
    """The whole pipeline on synthetic studies: generate, train (cross-validated), evaluate out of
    fold, predict a held-out set, and score it next to the oracle and the constant prior."""
    from rich.table import Table

    from spinegrade.constants import SCORE_TERMS
    from spinegrade.cv.evaluate import metrics_table
    from spinegrade.demo import demo as run_demo

    result = run_demo(
        out,
        thorough=thorough,
        studies=studies,
        test_studies=test_studies,
        folds=folds,
        config=config,
        overrides=overrides or [],
        seed=seed,
        workers=workers,
    )
    console.print(metrics_table(result.cv_metrics))
    table = Table(
        "term",
        "model",
        "prior",
        "oracle",
        title=f"held-out score, {len(result.test_study_ids)} new studies (lower is better)",
    )
    s = result.test_scores
    for term in (*SCORE_TERMS, "score"):
        cells = [
            s[k].score if term == "score" else s[k].terms[term]
            for k in ("model", "prior", "oracle")
        ]
        table.add_row(term, *(f"{v:.4f}" for v in cells))
    console.print(table)
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    console.print(
        f"submission:  {result.predictions / 'submission.csv'}\n"
        f"reports:     {result.predictions / 'index.html'}\n"
        f"metrics:     {result.run_dir / 'metrics.json'}\n"
        f"figures:     {result.run_dir / 'figures'}\n"
        f"summary:     {result.out_dir / 'demo.json'}\n"
        f"trained:     {result.trained}\n"
        f"time:        {steps}",
        soft_wrap=True,
        highlight=False,
    )


grade_app = typer.Typer(
    help="Stage 2: grade the 25 targets from 2.5D crops around their points.", no_args_is_help=True
)
app.add_typer(grade_app, name="grade")


@grade_app.command("train")
def grade_train(
    data_root: Annotated[
        Path, typer.Argument(help="RSNA folder with train_images/ and the label CSVs")
    ],
    out: OutOpt,
    config: ConfigOpt = "demo",
    fold: FoldOpt = 0,
    cache_dir: Annotated[
        Path | None, typer.Option(help="study cache folder (default: <out>/../cache)")
    ] = None,
    overrides: OverridesArg = None,
) -> None:
    """Train the grader on the TRUE points of every fold but `--fold` (validation loss on
    `--fold`)."""
    from spinegrade.config import save_config
    from spinegrade.data.tables import load_tables
    from spinegrade.grade import train_grader

    cfg, train_ids, held = _config_and_fold(data_root, config, overrides, fold)
    tables = load_tables(data_root)
    save_config(cfg, out / "config.yaml")
    console.print(
        f"training on {len(train_ids)} studies, fold {fold} ({len(held)} studies) held out"
    )
    path = train_grader(
        data_root,
        train_ids,
        tables.coordinates,
        tables.labels,
        out,
        cfg,
        val_ids=held,
        cache_dir=cache_dir or out.parent / "cache",
    )
    console.print(f"grader: {path}")


@grade_app.command("evaluate")
def grade_evaluate(
    data_root: Annotated[
        Path, typer.Argument(help="RSNA folder with train_images/ and the label CSVs")
    ],
    model: Annotated[Path, typer.Argument(help="model.pt written by `grade train`")],
    config: ConfigOpt = "demo",
    fold: FoldOpt = 0,
    tta: Annotated[
        bool, typer.Option(help="average with the left/right-mirrored prediction")
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help="study cache folder (default: none)")
    ] = None,
    overrides: OverridesArg = None,
) -> None:
    """Score the grader on the held-out fold from TRUE points, next to the prior (and
    oracle.csv)."""
    from rich.table import Table

    from spinegrade.constants import SCORE_TERMS
    from spinegrade.grade.evaluate import evaluate_grader
    from spinegrade.training.device import resolve_device

    cfg, train_ids, held = _config_and_fold(data_root, config, overrides, fold)
    report = evaluate_grader(
        data_root,
        model,
        held,
        train_ids,
        out=model.parent,
        device=str(resolve_device(cfg.device)),
        cache_dir=cache_dir,
        tta=tta,
    )
    table = Table(
        "predictions",
        "score",
        *SCORE_TERMS,
        title=f"grader on {report['studies']} held-out studies (fold {fold}), true points",
    )
    for who in ("model", "prior", "oracle"):
        if who in report:
            s = report[who]
            table.add_row(
                who,
                f"{s['score']:.4f}",
                *(
                    f"{s['terms'][t]:.4f}" if s["terms"][t] is not None else "-"
                    for t in SCORE_TERMS
                ),
            )
    console.print(table)
    if "oracle" in report:
        console.print(f"model / oracle: {report['model_over_oracle']:.3f}")
    console.print(
        f"rows filled with the prior: {report['filled_with_prior']}; report: "
        f"{model.parent / 'grade_eval.json'}"
    )


slices_app = typer.Typer(
    help="The two stages on real 2D images: Sagittal T1 PNG slices (points, foraminal grades) "
    "or Axial T2 PNG crops (subarticular and canal grades).",
    no_args_is_help=True,
)
app.add_typer(slices_app, name="slices")
ModeOpt = Annotated[
    str | None,
    typer.Option(
        "--mode", help="slices or crops (default: from the folder's slices.csv or crops.csv)"
    ),
]
#: The config `slices train` uses for each layout unless -c says otherwise.
SLICES_DEFAULT_CONFIG = {"slices": "slices_cpu", "crops": "crops_cpu"}


@slices_app.command("train")
def slices_train(
    data_dir: Annotated[
        Path, typer.Argument(help="folder with slices.csv + points.csv, or crops.csv, and images/")
    ],
    out: OutOpt,
    overrides: OverridesArg = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="config name or YAML path (default: slices_cpu or crops_cpu)"
        ),
    ] = None,
    mode: ModeOpt = None,
    folds: FoldsOpt = None,
) -> None:
    """Cross-validate by study (resumable by fold): stage 1 (slices) and stage 2 per fold, out of
    fold predictions, then the metrics beside the constant prior and the mean-position baseline."""
    from spinegrade.config import load_config
    from spinegrade.slices.inputs import detect_mode, open_folder

    found = detect_mode(data_dir, mode)
    cfg = load_config(config or SLICES_DEFAULT_CONFIG[found], overrides or [])
    open_folder(data_dir, found, truth=True)  # a bad folder fails now, before torch is imported

    from spinegrade.slices.evaluate import metrics_table
    from spinegrade.slices.train import train as train_slices

    summary = train_slices(data_dir, out, cfg, mode=found, folds=_fold_list(folds))
    console.print(metrics_table(summary.metrics))
    per_epoch = ", ".join(f"{k} {v:.1f} s" for k, v in summary.epoch_seconds.items()) or "-"
    console.print(
        f"{out}: trained folds {summary.folds_trained}, reused {summary.folds_reused}; "
        f"seconds per training epoch: {per_epoch}; {summary.seconds:.0f} s in all",
        soft_wrap=True,
    )


@slices_app.command("predict")
def slices_predict(
    run_dir: Annotated[Path, typer.Argument(help="run folder written by `slices train`")],
    data_dir: Annotated[
        Path, typer.Argument(help="folder of the run's layout (only its key columns are read)")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for submission.csv, points.csv")],
    folds: FoldsOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
) -> None:
    """Predict every target the folder asks for with the run's folds as one ensemble."""
    from spinegrade.slices.predict import predict as predict_slices

    result = predict_slices(run_dir, data_dir, out, folds=_fold_list(folds), device=device)
    console.print(
        f"{result['rows']} targets of {result['studies']} studies, folds {result['folds']}: "
        + ", ".join(result["files"].values()),
        soft_wrap=True,
    )


@slices_app.command("repredict")
def slices_repredict(
    run_dir: Annotated[Path, typer.Argument(help="run folder written by `slices train`")],
    out: Annotated[Path, typer.Option("--out", "-o", help="new run folder (must not exist yet)")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="inference settings key=value, e.g. slices.tta=true", show_default=False
        ),
    ] = None,
    folds: FoldsOpt = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="the data folder (default: the one recorded in run.json)"),
    ] = None,
) -> None:
    """Redo a run's out-of-fold rows from its fold models with other inference settings (or only
    some folds) into a new run folder, and print its metrics: nothing is trained."""
    from spinegrade.slices.evaluate import metrics_table
    from spinegrade.slices.repredict import repredict

    metrics = repredict(run_dir, out, overrides or [], folds=_fold_list(folds), data_dir=data)
    console.print(metrics_table(metrics))
    console.print(f"{out}: the out-of-fold rows of {run_dir}, predicted again", soft_wrap=True)


@slices_app.command("evaluate")
def slices_evaluate(
    run_dir: Annotated[Path, typer.Argument(help="run folder written by `slices train`")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="the data folder (default: the one recorded in run.json)"),
    ] = None,
) -> None:
    """Recompute calibration, metrics.json and report/ from the run's out-of-fold files, and print
    the model beside the constant prior and the mean-position baseline."""
    from spinegrade.slices.evaluate import evaluate as evaluate_slices
    from spinegrade.slices.evaluate import metrics_table
    from spinegrade.slices.folder import METRICS_JSON, REPORT_DIR

    console.print(metrics_table(evaluate_slices(run_dir, data_dir=data)))
    console.print(f"metrics: {run_dir / METRICS_JSON}, figures: {run_dir / REPORT_DIR}")
