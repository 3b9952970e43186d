"""Rendering the results page: one self-contained HTML file (inline CSS and SVG, no script).

Jinja2 escapes every value (documents and ids are untrusted); the page's
Content-Security-Policy forbids scripts and outside requests as a second line of defence.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from redundancy import __version__
from redundancy.core import BatchResult
from redundancy.report import view
from redundancy.report.view import MAX_ID_CHARS, as_batch_result, build_page, shorten

MAX_PAGE_BYTES = 2_000_000
"""Upper bound of a page's size in UTF-8 bytes whatever the batch (a test proves it on a
100,000-document batch built to be as large as possible)."""


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("redundancy.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["count"] = lambda n: f"{n:,}"
    env.filters["score"] = lambda x: f"{x:.3f}"
    return env


def render_batch_report(
    batch: Mapping[str, Any] | BatchResult,
    texts: Mapping[str, str] | None = None,
    *,
    title: str | None = None,
) -> str:
    """The results page of a batch as one HTML document.

    ``batch`` is a BatchResult or its JSON dict (``process_batch``'s return value);
    ``texts`` maps document ids to texts for the side-by-side views (``compared_ids``
    says which are needed); without them the page says the texts are not available.
    """
    result = as_batch_result(batch)
    page = build_page(result, texts, shorten(title, MAX_ID_CHARS) if title else None)
    template = _environment().get_template("report.html.j2")
    return template.render(page=page, limits=view, version=__version__)


def write_batch_report(
    path: Path, batch: BatchResult, texts: Mapping[str, str] | None = None
) -> None:
    """``crd batch --report``: the page written as one file."""
    path.write_text(render_batch_report(batch, texts), encoding="utf-8")
