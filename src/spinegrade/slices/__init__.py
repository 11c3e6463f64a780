"""`spinegrade slices`: the project's two stages trained, predicted and evaluated on real 2D images.

Two layouts (`slices.inputs`), detected from the table a folder holds:

- Sagittal T1 PNG slices (`slices.csv`, `points.csv`): stage 1 is the heatmap localiser with one
  channel per level (unmarked levels masked), stage 2 the grader on crops around each point of
  the 10 foraminal targets of a study;
- Axial T2 PNG crops (`crops.csv`, one per study level, three neighbouring slices as channels):
  stage 2 only, the canal and both subarticular recesses of each level (15 targets a study), the
  left/right mirror swapping the two recesses.

Images become nominal `Volume`s (`slices.volumes`) so the grader's mm crops, augmentation and
mirror work unchanged. `train.train` cross-validates by fold into a run folder (`slices.folder`
names everything in it), `predict.predict` runs its folds as one ensemble on any folder of the
layout (key columns only), `evaluate.evaluate` recomputes the metrics beside the constant prior
and the mean-position baseline, and `repredict.repredict` redoes a run's out-of-fold rows from its
fold models (another inference setting, or some folds only) into a new run folder.
"""
