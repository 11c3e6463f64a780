"""Stage 2: severity grading on 2.5D crops around located points (timm backbone, 25 x 3
probabilities).

API used by the training orchestrator and by inference:

- `train_grader(data_root, study_ids, coordinates, labels, out_dir, cfg, *, val_ids=None,
  cache_dir=None) -> Path`
- `Grader.load(path, device) -> Grader`, `Grader.predict(study, points, *, tta=False) -> (25, 3)`,
  `Grader.predict_many([(study, points), ...], *, tta=False) -> list of (25, 3)`
- `evaluate_grader(data_root, checkpoint, held_ids, train_ids, ...) -> dict`: the grader alone, from
  true points, next to the constant prior and `oracle.csv` (CLI: `spinegrade grade train|evaluate`).
"""

from spinegrade.grade.crops import crop_2p5d, mirror_crop, normalize_crop
from spinegrade.grade.dataset import CropParams, GradeDataset, locate_targets, study_crops
from spinegrade.grade.evaluate import evaluate_grader
from spinegrade.grade.loss import grade_loss
from spinegrade.grade.model import GraderNet, GraderSpec
from spinegrade.grade.predict import Grader
from spinegrade.grade.train import iter_studies, train_grader

__all__ = [
    "CropParams",
    "GradeDataset",
    "Grader",
    "GraderNet",
    "GraderSpec",
    "crop_2p5d",
    "evaluate_grader",
    "grade_loss",
    "iter_studies",
    "locate_targets",
    "mirror_crop",
    "normalize_crop",
    "study_crops",
    "train_grader",
]
