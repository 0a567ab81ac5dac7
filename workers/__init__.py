"""Worker processes and pools: which activities run on which task queue, and how many at once."""
