"""content-redundancy-detector: find redundant and near-duplicate text at scale.

Importing this package is cheap and pulls in no Celery, Redis or Kafka code; the
subpackages (``redundancy.tasks``, ``redundancy.events`` ...) load what they need.
"""

from __future__ import annotations

from redundancy.errors import RedundancyError

__version__ = "0.1.0"
__all__ = ["RedundancyError", "__version__"]
