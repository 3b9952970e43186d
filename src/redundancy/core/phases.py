"""Named phases of the core's work (normalise, cdist, clustering), observable from outside.

The core stays pure: it only marks where a phase starts and ends. Whoever wants to watch
(the tracing layer in ``redundancy.observability``) installs a hook that returns a
context manager per phase; without a hook a phase costs one global lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Final

PhaseHook = Callable[[str], AbstractContextManager[object]]

NORMALISE: Final = "normalise"
CDIST: Final = "cdist"
CLUSTERING: Final = "clustering"

_hook: PhaseHook | None = None


def set_phase_hook(hook: PhaseHook | None) -> None:
    """Install (or with None remove) the process-wide phase hook."""
    global _hook
    _hook = hook


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Mark a block of core work as phase ``name``."""
    hook = _hook
    if hook is None:
        yield
        return
    with hook(name):
        yield
