"""Dense transfer: segmentation and detection datasets, models, schedules, scores."""
