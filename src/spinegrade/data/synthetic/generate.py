"""Generate a folder of synthetic studies in the exact RSNA layout, with the Bayes-optimal oracle.

Labels come from a label source (`source.py`): real train.csv rows when the real file is found,
else the bundled label model (`label_model.py`).

Output (`out_dir`): `train.csv`, `train_series_descriptions.csv`, `train_label_coordinates.csv`,
`train_images/<study_id>/<series_id>/<instance_number>.dcm`, `oracle.csv` (submission format: the
Bayes-optimal prediction of each target given its rendered severity z_t, the reader-noise model and
the label source's per-target priors, P(k | z_t): the best any model grading from the images can
expect, see `labels.py`), `oracle_joint.csv` (real rows only: the posterior over the 1,975 real
label rows given all 25 z of a study: lower still, but only reachable by memorising that row list,
so a diagnostic), `synth_latent.csv` (the latent severity z of every target and the real row
drawn, -1 for the bundled model, for diagnostics) and `synth_labels.json` (which label source drew
the labels). Study i only uses the random stream `(seed, i)`, so the bytes do not depend on
`workers`; all files are written atomically and `oracle.csv` last (its presence marks a
complete set).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from spinegrade.constants import (
    CONDITION_LABELS,
    LEVEL_LABELS,
    SERIES_OF_CONDITION,
    SEVERITIES,
    SEVERITY_LABELS,
    TARGET_COLUMNS,
    TARGETS,
)
from spinegrade.data.synthetic.label_model import LabelModel
from spinegrade.data.synthetic.labels import (
    BLANK,
    READER_NOISE,
    LabelRows,
    ReaderModel,
    oracle_independent,
    oracle_joint,
    real_labels_frame,
    submission_frame,
    weighted_prior,
)
from spinegrade.data.synthetic.phantom import Phantom, make_phantom
from spinegrade.data.synthetic.render import render_series
from spinegrade.data.synthetic.scanner import SIZES, SeriesPlan, plan_series
from spinegrade.data.synthetic.source import LabelSource, RealLabels, label_source
from spinegrade.dicom.write import make_uid, write_series
from spinegrade.errors import DataError
from spinegrade.io import write_json, write_with

#: Annotator jitter of label coordinates (mm, in-plane; clipped at 2 sigma).
ANNOTATOR_JITTER_MM = 0.6
#: Share of spinal canal points marked on the Sagittal T1 instead of the T2/STIR (real: 5 of 1,947).
SPINAL_ON_T1 = 0.0026
#: What `generate` records about its label source in the output folder.
LABELS_JSON = "synth_labels.json"
#: What the summary says of `oracle_joint.csv` when the bundled model drew the labels.
NO_JOINT = "not written (no real rows)"


@dataclass
class SynthSummary:
    """What :func:`generate` made and how the reference predictions score on it."""

    out_dir: Path
    n_studies: int
    n_series: int
    n_images: int
    seconds: float
    bytes_on_disk: int
    oracle_score: float  #: per-target Bayes oracle P(k | z_t) (the file `oracle.csv`)
    #: posterior over the real label rows (the file `oracle_joint.csv`); None without real rows
    oracle_joint_score: float | None
    oracle_loo_score: float | None  #: joint oracle without the study's own real row; None too
    prior_score: float  #: the label source's weighted class prior (`labels.weighted_prior`)
    reader_noise: float
    label_source: str  #: `real train.csv at PATH` or `bundled label model vN`
    terms: dict[str, float] = field(default_factory=dict)  #: the oracle's four score terms

    def table(self) -> list[tuple[str, str]]:
        """(name, value) rows for printing (the label source is :attr:`label_source`)."""
        joint, loo = (
            (NO_JOINT, NO_JOINT)
            if self.oracle_joint_score is None or self.oracle_loo_score is None
            else (f"{self.oracle_joint_score:.4f}", f"{self.oracle_loo_score:.4f}")
        )
        return [
            ("studies", str(self.n_studies)),
            ("series", str(self.n_series)),
            ("images", str(self.n_images)),
            ("seconds", f"{self.seconds:.1f}"),
            ("disk MB", f"{self.bytes_on_disk / 1e6:.1f}"),
            ("reader noise s", f"{self.reader_noise:.3f}"),
            ("oracle (per target, oracle.csv)", f"{self.oracle_score:.4f}"),
            ("oracle (joint over real rows, oracle_joint.csv)", joint),
            ("oracle (joint, own row left out)", loo),
            ("constant prior", f"{self.prior_score:.4f}"),
        ]


@dataclass
class StudyResult:
    """One generated study: its ids, label row, latent z (25,), series and coordinate rows."""

    study_id: int
    row_index: int
    codes: np.ndarray
    z: np.ndarray
    series: list[tuple[int, str]]
    coords: list[tuple[int, int, str, str, float, float]]
    n_images: int


@dataclass(frozen=True)
class StudyJob:
    """What a worker needs to make study `index` (picklable; `counts` forces the series layout)."""

    out_dir: Path
    seed: int
    index: int
    study_id: int
    size: str
    source: LabelSource  #: the label rows or model and the series layouts drawn from
    reader_noise: float
    counts: tuple[int, int, int] | None = None


def generate(
    out_dir: str | Path,
    n_studies: int,
    seed: int,
    size: str = "small",
    workers: int = 0,
    labels: LabelSource | str | Path | None = None,
    reader_noise: float = READER_NOISE,
    progress: bool = True,
) -> SynthSummary:
    """Write `n_studies` synthetic studies into the empty (or new) folder `out_dir`.

    `size`: "small" (96-160 px sagittal, 64-128 px axial: fast, for tests and demos) or "full"
    (256-640 px, like real studies). `workers > 0` renders studies in that many processes (same
    bytes). `labels`: a folder with the real `train.csv` / `train_series_descriptions.csv`, a
    label source, or None: the real files if found, else the bundled label model (see
    :func:`~spinegrade.data.synthetic.source.label_source`). Prints nothing; returns the summary
    with the label source and the oracle's and the constant prior's scores.
    """
    if size not in SIZES:
        raise DataError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
    if n_studies < 1:
        raise DataError(f"need at least 1 study, got {n_studies}")
    if not reader_noise > 0:
        raise DataError(f"reader noise must be > 0, got {reader_noise}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: output folder exists and is not empty; choose a new one")
    start = time.perf_counter()
    source = label_source(labels)
    ids = study_ids(seed, n_studies)
    jobs = [
        StudyJob(out, seed, i, int(ids[i]), size, source, reader_noise) for i in range(n_studies)
    ]
    results = run_jobs(jobs, workers, progress)
    write_tables(out, results)
    model = ReaderModel.from_priors(source.priors(), reader_noise)
    z = np.stack([r.z for r in results])
    ids = [r.study_id for r in results]
    rows = source.rows if isinstance(source, RealLabels) else None
    joint = None if rows is None else oracle_joint(model, rows, z)
    if joint is not None:
        write_submission(out / "oracle_joint.csv", ids, joint)
    write_json(out / LABELS_JSON, labels_record(source, seed, n_studies, size, reader_noise))
    write_submission(out / "oracle.csv", ids, oracle_independent(model, z))  # last: set complete
    from spinegrade.data.tables import load_tables

    scores = _scores(
        load_tables(out).labels, results, source, model, joint
    )  # read back: checks the files
    n_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return SynthSummary(
        out_dir=out,
        n_studies=n_studies,
        n_series=sum(len(r.series) for r in results),
        n_images=sum(r.n_images for r in results),
        seconds=time.perf_counter() - start,
        bytes_on_disk=n_bytes,
        reader_noise=reader_noise,
        label_source=source.name,
        **scores,
    )


def labels_record(
    source: LabelSource, seed: int, n_studies: int, size: str, reader_noise: float
) -> dict[str, object]:
    """What `synth_labels.json` records: the label source and the arguments that, with it, fix
    the bytes of the set."""
    real = isinstance(source, RealLabels)
    return {
        "label_source": source.name,
        "kind": "real" if real else "bundled",
        "train_csv": str(source.root / "train.csv") if real else None,
        "label_model_version": source.version if isinstance(source, LabelModel) else None,
        "oracle_joint_csv": real,
        "seed": seed,
        "n_studies": n_studies,
        "size": size,
        "reader_noise": reader_noise,
    }


def study_ids(seed: int, n: int) -> np.ndarray:
    """`n` distinct realistic study ids (7-10 digits) derived from `seed`."""
    rng = np.random.default_rng([seed, 0x5EED])
    ids: list[int] = []
    seen: set[int] = set()
    while len(ids) < n:
        for v in rng.integers(1_000_000, 4_290_000_000, size=n).tolist():
            if v not in seen and len(ids) < n:
                seen.add(v)
                ids.append(v)
    return np.array(ids, dtype=np.int64)


def run_jobs(jobs: list[StudyJob], workers: int, progress: bool) -> list[StudyResult]:
    """Run :func:`make_study` for every job (in a process pool if `workers > 0`), in order."""
    bar = tqdm(total=len(jobs), desc="synth studies", unit="study", disable=not progress)
    results = []
    if workers > 0:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for res in pool.map(make_study, jobs):
                results.append(res)
                bar.update()
    else:
        for job in jobs:
            results.append(make_study(job))
            bar.update()
    bar.close()
    return results


@dataclass
class StudyDraw:
    """Everything random about one study before rendering (recreated exactly from its job)."""

    rng: np.random.Generator  #: the study's stream, positioned after the draws below
    row_index: int  #: the real train.csv row the labels come from (-1: the bundled model)
    codes: np.ndarray  #: (25,) labels, -1 blank
    z: np.ndarray  #: (25,) latent severities
    phantom: Phantom
    plans: list[SeriesPlan]
    series_ids: list[int]


def draw_labels(
    seed: int, index: int, source: LabelSource, reader_noise: float
) -> tuple[np.random.Generator, int, np.ndarray, np.ndarray]:
    """The first draws of study `index`: its stream `(seed, index)`, the real row index (-1 for
    the bundled model), the labels (25,) and the latent z (25,).

    Labels and z come before anything else, so the scores of a set can be known without rendering
    (see :func:`label_scores`)."""
    rng = np.random.default_rng([seed, index + 1])
    row_index, codes = source.draw(rng)
    z = ReaderModel.from_priors(source.priors(), reader_noise).sample_z(codes, rng)
    return rng, row_index, codes, z


def label_scores(
    n_studies: int,
    seed: int,
    labels: LabelSource | str | Path | None = None,
    reader_noise: float = READER_NOISE,
) -> dict[str, float | None]:
    """The oracle and prior scores `generate(out, n_studies, seed, labels=labels,
    reader_noise=...)` will report, from the label draws alone (no images): keys as
    :class:`SynthSummary` score fields."""
    source = label_source(labels)
    draws = [draw_labels(seed, i, source, reader_noise) for i in range(n_studies)]
    results = [
        StudyResult(int(sid), r, codes, z, [], [], 0)
        for sid, (_, r, codes, z) in zip(study_ids(seed, n_studies), draws)
    ]
    frame = real_labels_frame(
        LabelRows(np.stack([r.codes for r in results]), np.array([r.study_id for r in results]))
    )
    model = ReaderModel.from_priors(source.priors(), reader_noise)
    z = np.stack([r.z for r in results])
    joint = oracle_joint(model, source.rows, z) if isinstance(source, RealLabels) else None
    return _scores(frame, results, source, model, joint)


def draw_study(job: StudyJob) -> StudyDraw:
    """Labels, anatomy and series geometry of study `job.index` (random stream `(seed, index)`)."""
    rng, row_index, codes, z = draw_labels(job.seed, job.index, job.source, job.reader_noise)
    layouts = job.source.layout_rows()
    counts = job.counts if job.counts is not None else tuple(layouts[rng.integers(len(layouts))])
    phantom = make_phantom(rng, z)
    plans = plan_series(phantom, rng, job.size, counts)  # type: ignore[arg-type]
    return StudyDraw(rng, row_index, codes, z, phantom, plans, _series_ids(rng, len(plans)))


def make_study(job: StudyJob) -> StudyResult:
    """Draw, render and write one study; returns its table rows and latent severities."""
    draw = draw_study(job)
    rng, row_index, codes, z, phantom, plans, series_ids = (
        draw.rng,
        draw.row_index,
        draw.codes,
        draw.z,
        draw.phantom,
        draw.plans,
        draw.series_ids,
    )
    study_uid = make_uid("synth-study", job.seed, job.study_id)
    study_dir = job.out_dir / "train_images" / str(job.study_id)
    n_images = 0
    for number, (plan, sid) in enumerate(zip(plans, series_ids), start=1):
        stacks = render_series(phantom, plan, rng)
        for stack, pixels, numbers in zip(plan.stacks, stacks, plan.instance_numbers):
            write_series(
                study_dir / str(sid),
                pixels,
                origin=stack.positions[0],
                row_dir=stack.row_dir,
                col_dir=stack.col_dir,
                pixel_spacing=stack.spacing,
                slice_positions=stack.positions,
                slice_thickness=stack.thickness,
                series_description=plan.description,
                study_uid=study_uid,
                series_uid=make_uid("synth-series", job.seed, sid),
                series_number=number,
                instance_numbers=numbers.tolist(),
                patient_id=str(job.study_id),
                study_id=str(job.study_id),
            )
            n_images += len(numbers)
    coords = label_coordinates(phantom, plans, series_ids, codes, rng)
    return StudyResult(
        job.study_id,
        row_index,
        codes.copy(),
        z,
        [(s, p.description) for s, p in zip(series_ids, plans)],
        coords,
        n_images,
    )


def _series_ids(rng: np.random.Generator, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        v = int(rng.integers(10_000_000, 4_290_000_000))
        if v not in ids:
            ids.append(v)
    return ids


def label_coordinates(
    phantom: Phantom,
    plans: list[SeriesPlan],
    series_ids: list[int],
    codes: np.ndarray,
    rng: np.random.Generator,
) -> list[tuple[int, int, str, str, float, float]]:
    """Coordinate rows (series_id, instance, condition, level, x, y) for every labelled target
    whose series type exists: the phantom's 3D point projected onto the nearest slice of the
    first series of that type (axial: of the series with the nearest slice), plus annotator jitter.
    Like the real labels, a few spinal points (:data:`SPINAL_ON_T1`) sit on the Sagittal T1."""
    out = []
    jitter = np.clip(
        rng.normal(0.0, ANNOTATOR_JITTER_MM, (len(TARGETS), 2)),
        -2 * ANNOTATOR_JITTER_MM,
        2 * ANNOTATOR_JITTER_MM,
    )
    for t, (condition, level) in enumerate(TARGETS):
        if codes[t] == BLANK:
            continue
        kind = SERIES_OF_CONDITION[condition]
        if condition == "spinal_canal_stenosis" and rng.random() < SPINAL_ON_T1:
            kind = SERIES_OF_CONDITION["left_neural_foraminal_narrowing"]  # a real annotation slip
        cands = [(p, s) for p, s in zip(plans, series_ids) if p.description == kind]
        if not cands:
            continue
        if kind != SERIES_OF_CONDITION["left_subarticular_stenosis"]:
            cands = cands[:1]
        point = phantom.keypoints[(condition, level)]
        hits = [(plan.project(point), plan, sid) for plan, sid in cands]
        (instance, x, y, _), plan, sid = min(hits, key=lambda h: h[0][3])
        stack = plan.stacks[0]
        dy, dx = stack.spacing
        out.append(
            (
                sid,
                instance,
                CONDITION_LABELS[condition],
                LEVEL_LABELS[level],
                round(x + jitter[t, 0] / dx, 4),
                round(y + jitter[t, 1] / dy, 4),
            )
        )
    return out


def write_tables(out: Path, results: list[StudyResult]) -> None:
    """train.csv, train_series_descriptions.csv, train_label_coordinates.csv, synth_latent.csv."""
    names = [SEVERITY_LABELS[s] for s in SEVERITIES]
    labels = pd.DataFrame(
        [[r.study_id, *[names[k] if k != BLANK else "" for k in r.codes]] for r in results],
        columns=["study_id", *TARGET_COLUMNS],
    )
    series = pd.DataFrame(
        [(r.study_id, sid, d) for r in results for sid, d in r.series],
        columns=["study_id", "series_id", "series_description"],
    )
    coords = pd.DataFrame(
        [(r.study_id, *c) for r in results for c in r.coords],
        columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"],
    )
    latent = pd.DataFrame(
        [[r.study_id, r.row_index, *np.round(r.z, 6)] for r in results],
        columns=["study_id", "real_row", *TARGET_COLUMNS],
    )
    for name, frame in (
        ("train.csv", labels),
        ("train_series_descriptions.csv", series),
        ("train_label_coordinates.csv", coords),
        ("synth_latent.csv", latent),
    ):
        write_with(out / name, lambda p, f=frame: f.to_csv(p, index=False))


def write_submission(path: Path, study_ids_: list[int], probs: np.ndarray) -> Path:
    """A submission CSV (row_id + SEVERITIES) from probabilities (studies, 25, 3)."""
    frame = submission_frame(study_ids_, probs)
    return write_with(path, lambda p: frame.to_csv(p, index=False, float_format="%.6g"))


def _scores(
    labels: pd.DataFrame,
    results: list[StudyResult],
    source: LabelSource,
    model: ReaderModel,
    joint: np.ndarray | None,
) -> dict:  # type: ignore[type-arg]
    """Scores against `labels` (wide, snake_case) of the per-target oracle, the constant prior
    (the label source's weighted class prior) and, with real rows (`joint` given), the joint and
    leave-own-row-out oracles (else None)."""
    from spinegrade.metrics import score

    ids = [r.study_id for r in results]
    z = np.stack([r.z for r in results])
    result = score(labels, submission_frame(ids, oracle_independent(model, z)))
    prior = np.broadcast_to(weighted_prior(source.priors()), z.shape + (3,))
    joint_score = loo_score = None
    if joint is not None and isinstance(source, RealLabels):
        exclude = np.array([r.row_index for r in results])
        loo = oracle_joint(model, source.rows, z, exclude=exclude)
        joint_score = score(labels, submission_frame(ids, joint)).score
        loo_score = score(labels, submission_frame(ids, loo)).score
    return {
        "oracle_score": result.score,
        "terms": result.terms,
        "oracle_joint_score": joint_score,
        "oracle_loo_score": loo_score,
        "prior_score": score(labels, submission_frame(ids, prior)).score,
    }
