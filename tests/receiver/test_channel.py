"""The door-worker channel: messages keep their boundaries and carry a descriptor."""

from __future__ import annotations

import socket

from receiver.door import channel
from receiver.door.channel import WorkerStatus
from receiver.door.client import Client


def test_a_handoff_carries_the_socket_and_the_client_with_early_bytes() -> None:
    door, worker = channel.pair()
    left, right = socket.socketpair()
    client = Client("2001:db8:1:2::7", "2001:db8:1:2::/64", True, "mta.example", "listed")
    try:
        message = channel.handoff(client, b"EHLO a\r\n\0x")
        socket.send_fds(door, [message], [left.fileno()])
        door.send(channel.closed("192.0.2.1"))
        received, fds, _flags, _address = socket.recv_fds(worker, channel.MAX_HANDOFF, 1)
        assert channel.read_handoff(received) == (client, b"EHLO a\r\n\0x")
        with socket.socket(fileno=fds[0]) as adopted:
            adopted.sendall(b"ping")
            assert right.recv(4) == b"ping"
        # The next datagram is whole and separate.
        assert worker.recv(65536) == channel.CLOSED + b"192.0.2.1"
    finally:
        for end in (door, worker, left, right):
            end.close()


def test_a_status_too_big_for_the_channel_keeps_its_readiness() -> None:
    status = WorkerStatus(True, "ready", True, "ready", None, 0, "x" * (channel.MAX_STATUS + 1))
    message = channel.status(status)
    assert len(message) < channel.MAX_STATUS
    read = channel.read_status(message)
    assert read is not None and read.ready and read.metrics == ""
    assert channel.read_status(channel.STATUS + b"not json") is None
    assert channel.read_status(channel.STATUS + b'{"unknown": 1}') is None


def test_a_garbled_handoff_is_refused_not_guessed() -> None:
    for message in (channel.HANDOFF + b"not json\0", channel.HANDOFF + b"[1]\0"):
        try:
            channel.read_handoff(message)
        except (ValueError, TypeError):
            continue
        raise AssertionError(f"{message!r} was read as a hand-over")
