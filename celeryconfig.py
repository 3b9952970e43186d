"""Celery settings for content-redundancy-detector: the override point for ops.

Loaded only when named: ``CELERY_CONFIG_MODULE=./celeryconfig.py`` (a file) or
``CELERY_CONFIG_MODULE=myco.celeryconfig`` (a module on the import path; the working
directory is never searched). Every process using the app -- ``crd worker``, ``crd
flower``, ``celery -A redundancy.workers ...``, a producer calling ``.delay()``, ``crd
batch`` -- then applies it on top of the package's settings (built from the environment
variables in the README): any lowercase Celery setting assigned here wins, and
``broker_url`` / ``result_backend`` count as ``CELERY_BROKER_URL`` /
``CELERY_RESULT_BACKEND`` (a broker here means: not the embedded default).
"""

# Examples (uncomment to use):
# broker_url = "redis://127.0.0.1:6379/0"
# result_backend = "redis://127.0.0.1:6379/1"
# worker_max_tasks_per_child = 200
# task_time_limit = 900
# worker_concurrency = 4
