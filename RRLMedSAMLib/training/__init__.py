"""Training: presets, data preparation, stages, checkpoints."""
