"""Typed errors. Library code raises these; the CLI turns them into one line + exit code."""


class KdepError(Exception):
    """A user-facing problem with inputs, options or artifacts (exit code 2)."""

    exit_code = 2


class InputError(KdepError):
    """Bad option values, missing paths, empty folders, unknown names."""


class ArtifactError(KdepError):
    """A cache / targets / checkpoint that is missing, incomplete, corrupt or mismatched."""


class LineageError(ArtifactError):
    """Artifacts that were not built from each other (fingerprints differ)."""


class LockedError(KdepError):
    """Another writer holds the output directory."""

    exit_code = 3


class TrainingError(KdepError):
    """Training could not continue (e.g. a non-finite loss)."""

    exit_code = 4
