"""Celery settings for content-redundancy-detector: the override point for ops.

The app loads its settings from the package (``redundancy.workers.celeryconfig``, built
from the environment variables in the README), then this module -- found in the working
directory, or named by ``CELERY_CONFIG_MODULE`` -- on top. Everything below the import is
yours to change; any lowercase Celery setting assigned here wins.
"""

from redundancy.workers.celeryconfig import celery_settings

globals().update(celery_settings())

# Examples (uncomment to use):
# worker_max_tasks_per_child = 200
# task_time_limit = 900
# worker_concurrency = 4
