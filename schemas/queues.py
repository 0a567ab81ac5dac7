"""Task queue names: which worker pool runs what (see ARCHITECTURE.md)."""

from __future__ import annotations

WORKFLOW_TASK_QUEUE = "reelflow-workflows"
"""Workflow tasks only: deterministic orchestration, cheap, many in flight."""

MEDIA_TASK_QUEUE = "reelflow-media"
"""CPU-bound work: ffmpeg, local Whisper, the local embedder. Concurrency = cores."""

PROVIDER_TASK_QUEUE = "reelflow-providers"
"""I/O-bound work: database writes, paid provider APIs, downloads. High concurrency."""

ALL_TASK_QUEUES = (WORKFLOW_TASK_QUEUE, MEDIA_TASK_QUEUE, PROVIDER_TASK_QUEUE)
