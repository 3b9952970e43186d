"""A scripted HTTP server on loopback that records webhook requests (tests only).

It verifies each request with the README's receiver recipe (the ``verify`` function of
the README's Webhooks section, executed from the README itself), so every webhook test
also proves the recipe a user copies.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"


@cache
def readme_verify() -> Callable[..., bool]:
    """``verify(secret, headers, raw_body, now=None)`` as the README prints it."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    [recipe] = [b for b in blocks if "def verify(secret: bytes, headers" in b]
    namespace: dict[str, Any] = {}
    exec(compile(recipe, "README.md (webhook receiver recipe)", "exec"), namespace)
    verify: Callable[..., bool] = namespace["verify"]
    return verify


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


@dataclass
class WebhookServer:
    """Answers each POST with the next scripted reply: a status code, ("sleep", s), or
    (status, location) -- a redirect. Any other request is recorded and answered 405."""

    secret: bytes
    replies: list[object] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def start(self) -> WebhookServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = readme_verify()(server.secret, self.headers, body)
                server.received.append(Received(dict(self.headers), body, ok))
                reply = server.replies.pop(0) if server.replies else 200
                location = None
                if isinstance(reply, tuple) and reply[0] == "sleep":  # too slow, then 200
                    time.sleep(reply[1])
                    reply = 200
                elif isinstance(reply, tuple):  # (3xx, location): a redirect
                    reply, location = reply
                self.send_response(int(reply) if ok else 401)
                if location is not None and ok:
                    self.send_header("Location", str(location))
                self.end_headers()
                self.wfile.write(b"ok" if ok else b"bad signature")

            def _other(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                server.received.append(Received(dict(self.headers), body, False))
                self.send_response(405)
                self.end_headers()

            do_GET = do_PUT = do_HEAD = _other

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/hooks/batch?token=abc"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
