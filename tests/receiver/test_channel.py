"""The gate-worker channel: messages keep their boundaries and carry a descriptor."""

from __future__ import annotations

import socket

from receiver.door import channel
from receiver.door.channel import Handoff


def test_a_handoff_carries_the_socket_and_the_identity_with_early_bytes() -> None:
    gate, worker = channel.pair()
    left, right = socket.socketpair()
    try:
        message = Handoff("2001:db8:1:2::/64", "2001:db8:1:2::7", b"EHLO a\r\n\0x").encode()
        socket.send_fds(gate, [message], [left.fileno()])
        gate.send(channel.closed(["192.0.2.1", "192.0.2.2"]))
        received, fds, _flags, _address = socket.recv_fds(worker, channel.MAX_HANDOFF, 1)
        handoff = Handoff.decode(received)
        assert handoff == Handoff("2001:db8:1:2::/64", "2001:db8:1:2::7", b"EHLO a\r\n\0x")
        with socket.socket(fileno=fds[0]) as adopted:
            adopted.sendall(b"ping")
            assert right.recv(4) == b"ping"
        # The next datagram is whole and separate.
        assert channel.closed_keys(worker.recv(65536)) == ["192.0.2.1", "192.0.2.2"]
    finally:
        for end in (gate, worker, left, right):
            end.close()


def test_a_status_too_big_for_the_channel_keeps_its_readiness() -> None:
    message = channel.status(True, "ready", "x" * (channel.MAX_STATUS + 1))
    assert len(message) < channel.MAX_STATUS
    assert channel.payload(message) == {"ready": True, "reason": "ready", "metrics": ""}
    assert channel.payload(channel.BAN + b"not json") == {}
