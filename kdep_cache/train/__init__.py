"""Stage 2: train students against cached targets (and the paper's baselines)."""
