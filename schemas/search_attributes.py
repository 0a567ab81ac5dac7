"""Custom search attributes that make every run findable in the Temporal UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

TENANT_ID = SearchAttributeKey.for_keyword("TenantId")
VIDEO_ID = SearchAttributeKey.for_keyword("VideoId")
PIPELINE = SearchAttributeKey.for_keyword("Pipeline")
STAGE = SearchAttributeKey.for_keyword("Stage")
COST_USD = SearchAttributeKey.for_float("CostUsd")
PROJECT_ID = SearchAttributeKey.for_keyword("ProjectId")

REGISTRATION: dict[str, str] = {
    "TenantId": "Keyword",
    "VideoId": "Keyword",
    "Pipeline": "Keyword",
    "Stage": "Keyword",
    "CostUsd": "Double",
    "ProjectId": "Keyword",
}
"""Name → type, as `temporal server start-dev --search-attribute` and the operator API take."""
