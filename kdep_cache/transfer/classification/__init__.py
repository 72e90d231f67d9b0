"""Classification transfer: datasets, linear probe, fine-tune, scores, seeds."""
