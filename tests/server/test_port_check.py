"""`paligemma serve` checks its port before starting vLLM: a live socket stops it, a just-stopped server does not."""

from __future__ import annotations

import socket

import pytest

from server.errors import PortInUseError
from server.process import check_port_free


def listener(*, reuse_address: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse_address:  # as vLLM's server binds
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("reuse_address", [True, False])
def test_a_listening_port_is_refused_with_what_to_do(reuse_address: bool) -> None:
    with listener(reuse_address=reuse_address) as sock:
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"--port {port + 1}"):
            check_port_free("127.0.0.1", port)


def test_a_port_whose_server_just_closed_its_connections_is_free() -> None:
    """The server side of a closed connection stays in TIME_WAIT; a restarted vLLM binds over it."""
    sock = listener(reuse_address=True)
    port = sock.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = sock.accept()
    accepted.close()  # the server closes first: its end goes to TIME_WAIT
    client.close()
    sock.close()
    check_port_free("127.0.0.1", port)
