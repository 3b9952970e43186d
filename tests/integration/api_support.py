"""Real API servers for the integration tests: ``crd serve`` processes on loopback.

``start_api`` runs ``python -m redundancy serve`` in its own process group with the
cluster's environment plus ``REDIS_URL`` (keys, sessions, limits) and waits for
``/healthz``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.services import REDIS_CACHE_DB, Cluster, flush_db, free_port, redis_url


def api_env(tmp: Path, **extra: str) -> dict[str, str]:
    """REDIS_URL for the API's state."""
    url = redis_url(REDIS_CACHE_DB)
    return {"REDIS_URL": url, "LOG_FORMAT": "json", **extra}


@dataclass
class ApiServer:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=60, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def lines(self) -> list[dict[str, Any]]:
        """The server's JSON log lines."""
        out = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out


def start_api(cluster: Cluster, workers: int = 1, **env: str) -> ApiServer:
    port = free_port()
    log = cluster.tmp / f"api-{port}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redundancy",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=cluster.env(**api_env(cluster.tmp, **env)),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=cluster.tmp,
        start_new_session=True,
    )
    server = ApiServer(proc, port, log)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"crd serve exited {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base}/healthz", timeout=2).status_code == 200:
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"crd serve not up after 90 s:\n{log.read_text()}")
        time.sleep(0.2)


def create_key(cluster: Cluster, user: str, tmp: Path) -> str:
    out = cluster.crd("keys", "create", user, **api_env(tmp))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@contextlib.contextmanager
def api_servers(
    cluster: Cluster, count: int = 1, workers: int = 1, **env: str
) -> Iterator[list[ApiServer]]:
    flush_db(redis_url(REDIS_CACHE_DB))
    servers: list[ApiServer] = []
    try:
        for _ in range(count):
            servers.append(start_api(cluster, workers, **env))
        yield servers
    finally:
        for server in servers:
            server.stop()


def poll_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """GET the job until it finished (or the deadline passed); its last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status.get("state") in ("succeeded", "failed", "revoked"):
            return status
        if time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def sse_events(client: httpx.Client, path: str, timeout: float = 120) -> list[tuple[str, Any]]:
    """Every (event, data) of a Server-Sent Events stream until the server ends it."""
    events: list[tuple[str, Any]] = []
    kind, data = "message", []
    with client.stream("GET", path, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif line == "" and data:
                events.append((kind, json.loads("\n".join(data))))
                kind, data = "message", []
    return events
