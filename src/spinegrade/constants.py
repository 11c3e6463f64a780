"""The task's vocabulary, said once: conditions, levels, severities, weights, series types, row ids.

Everything else in spinegrade imports these names instead of spelling them again.
"""

from __future__ import annotations

from typing import Final

# --- conditions --------------------------------------------------------------------------------
CONDITIONS: Final[tuple[str, ...]] = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
CONDITION_LABELS: Final[dict[str, str]] = {
    "spinal_canal_stenosis": "Spinal Canal Stenosis",
    "left_neural_foraminal_narrowing": "Left Neural Foraminal Narrowing",
    "right_neural_foraminal_narrowing": "Right Neural Foraminal Narrowing",
    "left_subarticular_stenosis": "Left Subarticular Stenosis",
    "right_subarticular_stenosis": "Right Subarticular Stenosis",
}

#: The metric's condition groups: one weighted log loss per group.
CONDITION_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "spinal": ("spinal_canal_stenosis",),
    "foraminal": ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
    "subarticular": ("left_subarticular_stenosis", "right_subarticular_stenosis"),
}
GROUP_OF_CONDITION: Final[dict[str, str]] = {
    c: g for g, members in CONDITION_GROUPS.items() for c in members
}
ANY_SEVERE_SPINAL: Final = "any_severe_spinal"
#: The four terms of the challenge score, in the order they are printed.
SCORE_TERMS: Final[tuple[str, ...]] = ("spinal", "foraminal", "subarticular", ANY_SEVERE_SPINAL)

#: Left/right partner of each lateral condition (a horizontal flip swaps them).
MIRROR_CONDITION: Final[dict[str, str]] = {
    "spinal_canal_stenosis": "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing": "right_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing": "left_neural_foraminal_narrowing",
    "left_subarticular_stenosis": "right_subarticular_stenosis",
    "right_subarticular_stenosis": "left_subarticular_stenosis",
}

# --- levels ------------------------------------------------------------------------------------
LEVELS: Final[tuple[str, ...]] = ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
LEVEL_LABELS: Final[dict[str, str]] = {
    "l1_l2": "L1/L2",
    "l2_l3": "L2/L3",
    "l3_l4": "L3/L4",
    "l4_l5": "L4/L5",
    "l5_s1": "L5/S1",
}

# --- severities --------------------------------------------------------------------------------
SEVERITIES: Final[tuple[str, ...]] = ("normal_mild", "moderate", "severe")
SEVERITY_LABELS: Final[dict[str, str]] = {
    "normal_mild": "Normal/Mild",
    "moderate": "Moderate",
    "severe": "Severe",
}
#: Sample weight of a row in the metric, by its true class.
SEVERITY_WEIGHTS: Final[tuple[float, ...]] = (1.0, 2.0, 4.0)
#: Probability clipping used by the challenge metric.
PROB_EPS: Final = 1e-15

# --- series types ------------------------------------------------------------------------------
SAGITTAL_T1: Final = "Sagittal T1"
SAGITTAL_T2: Final = "Sagittal T2/STIR"
AXIAL_T2: Final = "Axial T2"
SERIES_TYPES: Final[tuple[str, ...]] = (SAGITTAL_T1, SAGITTAL_T2, AXIAL_T2)

#: The series type on which each condition is annotated and graded.
SERIES_OF_CONDITION: Final[dict[str, str]] = {
    "spinal_canal_stenosis": SAGITTAL_T2,
    "left_neural_foraminal_narrowing": SAGITTAL_T1,
    "right_neural_foraminal_narrowing": SAGITTAL_T1,
    "left_subarticular_stenosis": AXIAL_T2,
    "right_subarticular_stenosis": AXIAL_T2,
}

# --- targets and row ids -----------------------------------------------------------------------
#: The 25 targets (condition, level) in the column order of train.csv.
TARGETS: Final[tuple[tuple[str, str], ...]] = tuple((c, lv) for c in CONDITIONS for lv in LEVELS)
TARGET_COLUMNS: Final[tuple[str, ...]] = tuple(f"{c}_{lv}" for c, lv in TARGETS)
SUBMISSION_COLUMNS: Final[tuple[str, ...]] = ("row_id", *SEVERITIES)


def target_column(condition: str, level: str) -> str:
    """`spinal_canal_stenosis`, `l4_l5` -> `spinal_canal_stenosis_l4_l5` (a train.csv column)."""
    _check(condition, CONDITIONS, "condition")
    _check(level, LEVELS, "level")
    return f"{condition}_{level}"


def row_id(study_id: int | str, condition: str, level: str) -> str:
    """The submission row id `{study_id}_{condition}_{level}`."""
    return f"{int(study_id)}_{target_column(condition, level)}"


def parse_row_id(rid: str) -> tuple[int, str, str]:
    """Inverse of :func:`row_id`: `'123_spinal_canal_stenosis_l1_l2'` -> `(123, condition, level)`.

    Raises ValueError naming the row id when it is not of that form.
    """
    study, sep, rest = rid.partition("_")
    if sep and study.isdigit():
        for condition in CONDITIONS:
            prefix = condition + "_"
            if rest.startswith(prefix) and rest[len(prefix) :] in LEVELS:
                return int(study), condition, rest[len(prefix) :]
    raise ValueError(f"not a valid row_id: {rid!r} (expected '<study_id>_<condition>_<level>')")


def condition_from_label(text: str) -> str:
    """`'Left Neural Foraminal Narrowing'` -> `'left_neural_foraminal_narrowing'`."""
    return _from_label(text, CONDITION_LABELS, "condition")


def level_from_label(text: str) -> str:
    """`'L4/L5'` -> `'l4_l5'`."""
    return _from_label(text, LEVEL_LABELS, "level")


def severity_from_label(text: str) -> str:
    """`'Normal/Mild'` -> `'normal_mild'`."""
    return _from_label(text, SEVERITY_LABELS, "severity")


def severity_index(text: str) -> int:
    """Class index 0/1/2 of a severity given as CSV label or snake_case name."""
    name = text if text in SEVERITIES else severity_from_label(text)
    return SEVERITIES.index(name)


def _from_label(text: str, labels: dict[str, str], what: str) -> str:
    key = text.strip().lower()
    for name, label in labels.items():
        if key in (label.lower(), name):
            return name
    raise ValueError(f"unknown {what} {text!r}; expected one of {list(labels.values())}")


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {list(allowed)}")
