"""Teacher diagnostics of a raw cache: the report and its plots."""
