"""What the client, the server and the workers share: task outcomes, the start-up greeting, the error that sends
the caller to in-process checks, and the length-prefixed pickle framing of the client <-> server pipes."""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any, BinaryIO


__all__ = [
    "ERROR",
    "HARD_TIMEOUT",
    "OK",
    "READY",
    "SERVER_MODULE",
    "SOFT_TIMEOUT",
    "PoolUnavailable",
    "read_message",
    "write_message",
]

OK, SOFT_TIMEOUT, HARD_TIMEOUT, ERROR = "ok", "soft-timeout", "hard-timeout", "error"
SERVER_MODULE = "mo_align.rewards.verify"  # ``python -m SERVER_MODULE`` runs the server (its ``__main__``)
READY = "ready"  # first message of a server to its client, and of a worker to its server


class PoolUnavailable(RuntimeError):
    """No verification server/worker could be started (the caller falls back to in-process checks)."""


_HEADER = struct.Struct("!I")


def write_message(stream: BinaryIO, obj: Any) -> None:
    """Pickle ``obj`` behind its 4-byte big-endian length and flush."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_message(fd: int) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return pickle.loads(_read_exact(fd, size))
