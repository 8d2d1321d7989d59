"""Training: data preparation, the training stages and their orchestration (what a run is lives in ``run/``)."""
