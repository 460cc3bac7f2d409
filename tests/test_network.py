import socket
import time

import pytest

from aigc_utils.core import network as net


def test_guard_blocks_outside_connections():
    with pytest.raises(net.NetworkForbidden):
        socket.create_connection(("198.51.100.7", 443), timeout=1)


def test_guard_allows_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=1)
    client.close()
    server.close()


def test_reachable_is_false_and_fast_offline():
    start = time.perf_counter()
    assert net.reachable("huggingface.co") is False
    assert time.perf_counter() - start < 1
