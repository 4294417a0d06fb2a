"""What the client and the server agree on: statuses, framing, the environment, one error text.

Standard library only, and no import of a sibling: the server imports it as ``sbx_protocol``
(its folder is on ``sys.path`` while it starts), the client as
``aimo.sandbox._server.sbx_protocol``. Importing it has no side effect.

A session channel (client <-> session) is a SOCK_STREAM socket carrying JSON objects, each
prefixed by its length (`HDR`: 4 bytes, big-endian), none longer than `MAX_MSG`.
"""

from __future__ import annotations

import json
import struct

OK, ERROR, TIMEOUT, MEMORY = "ok", "error", "timeout", "memory"
OUTPUT_LIMIT, KILLED = "output_limit", "killed"
STATUSES = (OK, ERROR, TIMEOUT, MEMORY, OUTPUT_LIMIT, KILLED)

MAX_MSG = 1 << 26  # no message on a session channel may claim to be longer (64 MiB)
HDR = struct.Struct("!I")

# The environment of the server and of every session (the client adds HOME=/ and
# PYTHONHASHSEED=0 for the server; a session adds its scratch directory as HOME and TMPDIR, and
# the server's PYTHONHASHSEED): UTF-8, no bytecode files, no display, one thread per numeric
# library and few malloc arenas (a session's processes share one memory cap).
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "MPLBACKEND": "Agg",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
}


def frame(obj) -> bytes:
    """`obj` as JSON, prefixed by its length: one message on a session channel."""
    data = json.dumps(obj).encode()
    return HDR.pack(len(data)) + data


def send_msg(sock, obj):
    """Length-prefixed JSON on a stream socket (blocking)."""
    sock.sendall(frame(obj))


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def recv_msg(sock):
    (n,) = HDR.unpack(_recv_exact(sock, HDR.size))
    if n > MAX_MSG:
        raise EOFError
    return json.loads(_recv_exact(sock, n))


def memory_cap_text(limits, pool_mb, what):
    """The error of a block whose session reached its memory cgroup's cap (or the pool's)."""
    pool = f", or all sessions together the pool's {int(pool_mb)} MB" if pool_mb else ""
    return (
        f"MemoryError: memory cap reached (all processes of the session together may hold "
        f"{int(limits.get('session_memory_mb', 0))} MB{pool}); the kernel's OOM killer {what}."
    )
