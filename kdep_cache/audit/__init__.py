"""Read-only checks of artifacts: ``info`` (what it is, lineage) and ``verify`` (intact?)."""
