"""Cross-validation above the two stages: the run folder, the ensemble of fold models, k-fold
training with out-of-fold prediction through the ensemble, and evaluation.

- `folder.RunFolder`: every name in a run folder, its format version, complete folds
- `ensemble.Ensemble`: one or more folds' localiser + grader as one predictor (what `predict` runs)
- `train.train(data_root, run_dir, cfg)`: both stages per fold, OOF rows from an ensemble of one
  fold
- `evaluate.evaluate(run_dir)`: metrics.json, calibration, figures from the saved OOF files
"""
