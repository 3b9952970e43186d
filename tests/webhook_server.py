"""A scripted HTTP server on loopback that records webhook requests (tests only)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from redundancy.events.wire import signature_valid


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
                ok = signature_valid(server.secret, body, self.headers.get("X-Webhook-Signature"))
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
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/hooks/batch?token=abc"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
