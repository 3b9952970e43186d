"""Servers of our own on free loopback ports, started and stopped by PID.

Used by the test fixtures (``tests/services.py``) and the benchmarks; no pytest here. A
missing binary raises ``ServerMissing`` (the fixtures turn it into skip, or fail in CI).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


class ServerMissing(RuntimeError):
    """The server's binary is not installed."""


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """One server process on ``127.0.0.1:port``; ``stop()`` kills it (a real outage)."""

    name = "server"
    start_timeout = 30.0

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = (self.tmp / f"{self.name}-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while not port_open("127.0.0.1", self.port, 0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class PrivateRedis(PrivateServer):
    """A redis-server that keeps nothing on disk. Fault tests stop this one, never the
    machine's shared Redis."""

    name = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerMissing("redis-server binary")
        return [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.tmp)]  # fmt: skip


class PrivatePrometheus(PrivateServer):
    """A Prometheus server (Debian package ``prometheus``) scraping ``targets`` as job
    ``job`` every second, with its data in ``tmp``."""

    name = "prometheus"

    def __init__(self, tmp: Path, targets: list[str], job: str = "celery") -> None:
        super().__init__(tmp)
        self.config = tmp / f"prometheus-{self.port}.yml"
        self.config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start, then wait until it answers ``/-/ready`` (it listens before it is)."""
        import urllib.error
        import urllib.request

        super().start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError("prometheus did not become ready") from None
                time.sleep(0.1)

    def command(self) -> list[str]:
        binary = shutil.which("prometheus")
        if binary is None:
            raise ServerMissing("prometheus binary (Debian package prometheus)")
        return [binary, f"--config.file={self.config}",
                f"--storage.tsdb.path={self.tmp / f'tsdb-{self.port}'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]  # fmt: skip

    def query_range(self, expr: str, start: float, end: float, step: str = "1s") -> list[Any]:
        """The result of ``/api/v1/query_range`` (a list of series with values)."""
        import json
        import urllib.parse
        import urllib.request

        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])


class PrivateRedisCluster:
    """A real Redis Cluster of ``masters`` redis-servers on free loopback ports (no
    replicas, nothing on disk), created with ``redis-cli --cluster create``."""

    def __init__(self, tmp: Path, masters: int = 3) -> None:
        self.tmp = tmp
        self.nodes = [_ClusterNode(tmp) for _ in range(masters)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout: float = 60.0) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ServerMissing("redis-cli binary")
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while True:  # every node must agree that all slots are served
            states = [
                subprocess.run(
                    [cli, "-p", str(n.port), "cluster", "info"],
                    capture_output=True, text=True, check=False, timeout=10,
                ).stdout
                for n in self.nodes
            ]  # fmt: skip
            if all("cluster_state:ok" in s for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ready after {timeout} s: {states}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class _ClusterNode(PrivateRedis):
    name = "redis-cluster-node"

    def command(self) -> list[str]:
        folder = self.tmp / f"cluster-{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        # the bus port explicitly: the default (port + 10000) may not exist or be taken
        return [*super().command()[:-2], "--dir", str(folder), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port()),
                "--cluster-node-timeout", "5000"]  # fmt: skip
