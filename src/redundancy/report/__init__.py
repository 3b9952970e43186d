"""The results page of a batch: summary, charts, clusters and side-by-side differences.

``render_batch_report`` is the one entry point: the CLI (``crd batch --report``) writes
its page to a file, the HTTP gateway serves it at ``GET /batches/{id}``.
"""

from __future__ import annotations

from redundancy.report.page import MAX_PAGE_BYTES, render_batch_report, write_batch_report
from redundancy.report.texts import TextSpool
from redundancy.report.view import compared_ids

__all__ = [
    "MAX_PAGE_BYTES",
    "TextSpool",
    "compared_ids",
    "render_batch_report",
    "write_batch_report",
]
