"""A known batch for the results-page tests, and a small HTML tree to query pages with.

The batch holds untrusted content on purpose: script and image tags in a document's text
and in ids, so every page test also exercises the escaping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

RIVER = (
    "The river rose slowly through the night while the town slept behind its walls. "
    "By morning the water had covered the lower fields, the mill road and the old stone "
    "bridge, and the ferry could not leave its moorings until the afternoon. Farmers "
    "moved their cattle to the hill pastures and the school opened late."
)
KITCHEN = (
    "Preheat the oven, butter a deep tin and line it with paper. Cream the butter and the "
    "sugar until pale, beat in the eggs one at a time, then fold in the flour with a pinch "
    "of salt. Bake for forty minutes, until a skewer comes out clean, and cool it on a rack "
    "before you cut it."
)
PAYLOAD = '<script>window.crdPwned=1</script><img src=x onerror="window.crdPwned=2">'
EVIL_ID = 'evil<script>window.crdPwned=3</script>"quote.txt'

KNOWN_DOCUMENTS: dict[str, str] = {
    "river-original.txt": RIVER,
    "river-herald.txt": RIVER.replace("slowly", "steadily").replace("afternoon", "evening"),
    "river-digest.txt": RIVER.replace("old stone", "narrow iron"),
    "cake.txt": KITCHEN + " " + PAYLOAD,
    EVIL_ID: KITCHEN.replace("forty", "fifty") + " " + PAYLOAD,
    "unrelated.txt": "Quarterly invoices are due on the fifth working day of each month.",
}
FAILED_ID = "<b>empty</b>.txt"
"""An item that fails (empty text), with markup in its id."""

RIVER_CLUSTER = {"river-original.txt", "river-herald.txt", "river-digest.txt"}
BEST_NEAR_PAIR = ("cake.txt", EVIL_ID)
"""The best-scoring pair that is not an exact copy: one word apart (forty / fifty)."""


def known_items() -> list[dict[str, str]]:
    return [{"id": i, "text": t} for i, t in KNOWN_DOCUMENTS.items()] + [
        {"id": FAILED_ID, "text": "   "}
    ]


def write_known_jsonl(path: Path) -> Path:
    """The known items as a JSONL file, the input of ``crd batch``."""
    path.write_text("".join(json.dumps(item) + "\n" for item in known_items()), "utf-8")
    return path


def known_batch() -> dict[str, Any]:
    """``process_batch``'s JSON result on the embedded default (what the gateway serves)."""
    from redundancy.tasks import process_batch

    return dict(process_batch.apply(args=(known_items(), 0.8)).get())


VOID = {"meta", "link", "br", "hr", "img", "input", "wbr", "source", "area", "col"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def walk(self) -> list[Node]:
        found = [self]
        for c in self.children:
            if isinstance(c, Node):
                found += c.walk()
        return found

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Elements with this tag whose attributes contain these values (``cls`` = class)."""
        wanted = {("class" if k == "cls" else k): v for k, v in attrs.items()}
        return [
            n
            for n in self.walk()
            if (tag is None or n.tag == tag)
            and all(
                v in (n.attrs.get(k) or "").split() or n.attrs.get(k) == v
                for k, v in wanted.items()
            )
        ]

    def by_id(self, element_id: str) -> Node:
        (node,) = [n for n in self.walk() if n.attrs.get("id") == element_id]
        return node


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document")
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return
        raise AssertionError(f"</{tag}> closes nothing")

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.stack == [builder.root], f"unclosed: {[n.tag for n in builder.stack]}"
    return builder.root
