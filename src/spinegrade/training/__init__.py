"""Training machinery shared by both stages: the loop, checkpoints, devices, distributed set-up."""
