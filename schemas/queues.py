"""Task queue names: which worker pool runs what (see ARCHITECTURE.md).

Queues come in a family sharing a prefix (`reelflow` by default): `<prefix>-workflows`,
`<prefix>-media`, `<prefix>-providers`. A workflow sends its activities to the siblings of
the queue it runs on, so a separate family (another prefix) is a fully isolated pipeline —
used by tests, and usable for canaries.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "reelflow"
_WORKFLOWS, _MEDIA, _PROVIDERS = "workflows", "media", "providers"
POOLS = (_WORKFLOWS, _MEDIA, _PROVIDERS)


@dataclass(frozen=True)
class TaskQueues:
    """The three queues of one family."""

    workflows: str
    """Workflow tasks only: deterministic orchestration, cheap, many in flight."""
    media: str
    """CPU-bound work: ffmpeg, local Whisper, the local embedder. Concurrency = cores."""
    providers: str
    """I/O-bound work: database writes, paid provider APIs, downloads. High concurrency."""

    @classmethod
    def for_prefix(cls, prefix: str = DEFAULT_PREFIX) -> TaskQueues:
        return cls(f"{prefix}-{_WORKFLOWS}", f"{prefix}-{_MEDIA}", f"{prefix}-{_PROVIDERS}")

    @classmethod
    def of_workflow_queue(cls, workflow_queue: str) -> TaskQueues:
        """The family of the queue a workflow runs on (deterministic: workflow code uses it)."""
        return cls.for_prefix(workflow_queue.removesuffix(f"-{_WORKFLOWS}"))

    def host(self, host_id: str) -> str:
        """The queue only one media host polls, for work that lives on that host's disk.

        The local renderer keeps its jobs on the disk of the host that made them, so their
        polls, downloads and cancels must reach that host and no other (as the samples'
        worker-specific task queues do).
        """
        return f"{self.media}-host-{host_id}"

    def by_pool(self, pool: str) -> str:
        """`workflows`, `media` or `providers` → that queue's name."""
        return {_WORKFLOWS: self.workflows, _MEDIA: self.media, _PROVIDERS: self.providers}[pool]


DEFAULT_QUEUES = TaskQueues.for_prefix()
WORKFLOW_TASK_QUEUE = DEFAULT_QUEUES.workflows
MEDIA_TASK_QUEUE = DEFAULT_QUEUES.media
PROVIDER_TASK_QUEUE = DEFAULT_QUEUES.providers
ALL_TASK_QUEUES = (WORKFLOW_TASK_QUEUE, MEDIA_TASK_QUEUE, PROVIDER_TASK_QUEUE)
