"""Stage 1b: streaming moments, aligners and transforms, the fit, the projection file."""
