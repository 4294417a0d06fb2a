"""What goes into a code block and what comes out: `Limits`, `ExecResult`, the statuses.

Also `SandboxError` (the sandbox cannot work here) and `GRACE_S`. The statuses are the server's
own (``_server/sbx_protocol.py``), so the two sides cannot disagree on them.
"""

from __future__ import annotations

import dataclasses

from aimo.sandbox._server.sbx_protocol import (
    ERROR,
    KILLED,
    MEMORY,
    OK,
    OUTPUT_LIMIT,
    STATUSES,
    TIMEOUT,
)

__all__ = [
    "ERROR",
    "GRACE_S",
    "KILLED",
    "MEMORY",
    "OK",
    "OUTPUT_LIMIT",
    "STATUSES",
    "TIMEOUT",
    "ExecResult",
    "Limits",
    "SandboxError",
]

GRACE_S = 0.5  # after the soft wall-time interrupt, how long before the process is killed


@dataclasses.dataclass
class Limits:
    """Per-block limits. Every field has a default; ``Limits(**config_dict)`` works.

    ``pool_memory_mb`` and ``accept_missing`` concern the whole pool: they are read from the
    Sandbox's limits (a session's own limits cannot change them)."""

    wall_s: float = 10.0  # wall time per block (soft interrupt, then kill GRACE_S later)
    cpu_s: float = 10.0  # CPU time per block (RLIMIT_CPU, whole seconds)
    memory_mb: int = 2048  # address space per process (RLIMIT_AS)
    processes: int = 16  # processes and threads of the session's uid (RLIMIT_NPROC)
    open_files: int = 64  # RLIMIT_NOFILE
    file_size_mb: int = 16  # largest file a block may write (RLIMIT_FSIZE)
    output_chars: int = 2000  # characters of stdout returned (head and tail kept)
    max_output_mb: float = 8  # a block printing more than this is stopped ("output_limit")
    scratch_mb: int = 256  # size of the private /tmp (tmpfs) of a session
    session_memory_mb: int = 2048  # memory of all processes of a session together (memory cgroup)
    pool_memory_mb: int = 4096  # memory of the whole pool: server, spares and sessions (cgroup)
    accept_missing: bool = False  # run even when a protection that should hold here does not

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise TypeError(f"Limits.{f.name} must be true or false, not {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Limits.{f.name} must be a number, not {value!r}")
            value = float(value) if f.type in ("float", float) else int(value)
            if value < 0 or (value == 0 and f.name != "output_chars"):
                raise ValueError(f"Limits.{f.name} must be positive, not {value!r}")
            setattr(self, f.name, value)


@dataclasses.dataclass
class ExecResult:
    """What one code block did."""

    status: str  # one of STATUSES
    stdout: str = ""  # captured stdout+stderr, cut to output_chars (head and tail kept)
    error: str = ""  # traceback tail, or why the block was stopped
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def output(self) -> str:
        """The text to show the model: stdout, then the error if any."""
        if not self.error:
            return self.stdout
        if not self.stdout:
            return self.error
        return self.stdout + ("" if self.stdout.endswith("\n") else "\n") + self.error


class SandboxError(RuntimeError):
    """The sandbox cannot work here (its server does not start). Not caused by the code run."""
