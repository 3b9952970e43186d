"""The HTTP gateway: a FastAPI app over the same tasks, served by ``crd serve``.

    from redundancy.api import create_api      # uvicorn --factory redundancy.api:create_api

* ``app``           -- ``create_api()``: middleware, routers, error answers, tracing
* ``routes``        -- ``/v1`` jobs (analyses, comparisons, batches, status, events,
                       revoke), ``/healthz``, ``/readyz``, ``/metrics``
* ``corpora``       -- ``/v1/corpora``: a user's own corpora (create, index as a job,
                       query, check, remove, stats, drop)
* ``sessions``      -- login with a key for a session cookie, logout, the login form
* ``pages``         -- ``/batches/{id}``: the results page (``redundancy.report``)
* ``auth``          -- key or session, then the key's rate limit
* ``apikeys``       -- keys: created, hashed, listed, revoked
* ``limits``        -- GCRA requests/s with burst, daily documents/bytes quota (Lua)
* ``jobs``          -- who owns which job; state and results from Celery
* ``intake``        -- batch bodies: JSON, streamed JSONL, multipart uploads
* ``observability`` -- correlation id, HTTP metrics, access log, body limits
* ``server``        -- ``serve()``: uvicorn with multiprocess-correct metrics
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_api"]


def __getattr__(name: str) -> Any:
    # Lazy: ``crd serve`` imports ``redundancy.api.server`` and must set up the metrics
    # folder before anything (the app's modules) imports prometheus_client.
    if name == "create_api":
        from redundancy.api.app import create_api

        return create_api
    raise AttributeError(name)
