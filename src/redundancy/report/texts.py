"""Document texts kept on disk while a batch runs, for the results page.

The page shows the texts of a few pairs only, known once the batch is done; a spool keeps
a 100,000-document batch out of memory (only each id's offset stays) and reads back the
few texts the page needs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from typing import Any


class TextSpool(Mapping[str, str]):
    """A read-only mapping id -> text backed by an anonymous temporary file."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the spool)
        self._where: dict[str, tuple[int, int]] = {}
        self._end = 0

    def add(self, doc_id: str, text: Any) -> None:
        """Keep ``text`` (non-text values, which fail as items anyway, are skipped)."""
        if not isinstance(text, str):
            return
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: the item fails, nothing to show
            return
        self._file.seek(self._end)
        self._file.write(data)
        self._where[doc_id] = (self._end, len(data))
        self._end += len(data)

    def __getitem__(self, doc_id: str) -> str:
        offset, size = self._where[doc_id]
        self._file.seek(offset)
        return self._file.read(size).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TextSpool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
