"""Where and how code runs: device and precision, torch.distributed, progress."""
