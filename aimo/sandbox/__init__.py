"""Sandboxed, stateful execution of model-written Python code blocks.

    from aimo.sandbox import Sandbox, Limits, ExecResult
    with Sandbox(Limits(wall_s=10), workers=2) as sb:
        s = sb.session()
        s.run("x = 6\\nprint(x * 7)")          # ExecResult(status='ok', stdout='42\\n', ...)
        sb.run_round([(s, "print(x)"), (t, "print(1)")])

See docs/sandbox.md for the design, the isolation it gives, and what it does not; the rooms:
limits.py (Limits, ExecResult, statuses), client.py (Sandbox, Session), _channels.py (its sockets),
_protections.py (the missing protections reported), _cgroup.py (memory cgroups) and _server/
(the server, a folder run by path).
"""

from aimo.sandbox.client import Sandbox, Session
from aimo.sandbox.limits import (
    ERROR,
    GRACE_S,
    KILLED,
    MEMORY,
    OK,
    OUTPUT_LIMIT,
    STATUSES,
    TIMEOUT,
    ExecResult,
    Limits,
    SandboxError,
)

__all__ = [
    "Sandbox",
    "Session",
    "Limits",
    "ExecResult",
    "SandboxError",
    "STATUSES",
    "OK",
    "ERROR",
    "TIMEOUT",
    "MEMORY",
    "OUTPUT_LIMIT",
    "KILLED",
    "GRACE_S",
]
