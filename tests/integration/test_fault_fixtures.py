"""The fault-injection helpers must really inject faults, or fault tests prove nothing."""

from __future__ import annotations

import socket

import pytest

from tests.services import port_open

pytestmark = pytest.mark.integration


def test_private_redis_really_stops(private_redis):
    import redis

    client = redis.Redis.from_url(private_redis.url, socket_connect_timeout=1)
    assert client.ping()
    private_redis.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_tcp_proxy_relays_and_cut_really_refuses(tcp_proxy):
    # Given an echo server behind the proxy
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    import threading

    def echo():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            data = conn.recv(100)
            conn.sendall(data)
            conn.close()

    threading.Thread(target=echo, daemon=True).start()
    proxy = tcp_proxy("127.0.0.1", server.getsockname()[1])
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as c:
        c.sendall(b"ping")
        assert c.recv(100) == b"ping"
    # When cut, the port refuses connections; when restored, it relays again
    proxy.cut()
    assert not port_open("127.0.0.1", proxy.port, 0.5)
    proxy.restore()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as c:
        c.sendall(b"again")
        assert c.recv(100) == b"again"
    server.close()
