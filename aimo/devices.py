"""Give a GPU job on one machine a device of its own.

Snakemake bounds how many `gpu` jobs run at once (`--resources gpu=N`, see profiles/default)
but does not tell a local job which device to use, so without this every engine would start on
device 0. `claim()` picks the first device that no other job holds, by an exclusive lock on a
file per device in a directory shared by all jobs of the machine, and sets CUDA_VISIBLE_DEVICES
to it for this process and its children. The lock lasts as long as the process: the kernel
releases it when the job ends, however it ends, so a killed job leaves no stale claim. Where a
scheduler has already given the job exactly one device (Slurm's --gpus=1 sets
CUDA_VISIBLE_DEVICES), or the machine has none, there is nothing to choose.

This module must never import torch or vllm: CUDA reads CUDA_VISIBLE_DEVICES once, when it is
first used, so `claim()` has to run before either is imported.
"""

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger("aimo.devices")

LOCK_DIR = os.environ.get(
    "AIMO_GPU_LOCK_DIR", os.path.join(tempfile.gettempdir(), "aimo-gpu-locks")
)

_held = {}  # device -> locked file descriptor, kept open for the life of the process


def visible_devices(env=None, proc=Path("/proc/driver/nvidia/gpus")) -> list[str]:
    """The devices this process may use: CUDA_VISIBLE_DEVICES when set (a scheduler's or the
    user's choice; empty means none), else every NVIDIA GPU of the machine by index."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    try:
        return [str(i) for i in range(len(list(proc.iterdir())))]
    except OSError:
        return []


def claim(lock_dir=LOCK_DIR, wait_s: float = 3600.0, poll_s: float = 2.0, env=None) -> str | None:
    """Hold one free device and make it the only one this process sees; return it (None on a
    machine without GPUs). With one candidate, return it without locking. When every device is
    held, wait up to `wait_s` for one, then raise TimeoutError naming the lock directory."""
    env = os.environ if env is None else env
    devices = visible_devices(env)
    if len(devices) <= 1:
        return devices[0] if devices else None
    lock_dir = Path(lock_dir)
    if not lock_dir.is_dir():
        lock_dir.mkdir(parents=True, exist_ok=True)
        try:  # shared by every user's jobs on the machine, like /tmp
            lock_dir.chmod(0o1777)
        except OSError:
            pass
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        for device in devices:
            path = lock_dir / f"gpu-{device}.lock"
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)  # flock needs no write access
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _held[device] = fd
            env["CUDA_VISIBLE_DEVICES"] = device
            log.info("using GPU %s of %s (lock %s)", device, ",".join(devices), path)
            return device
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"all GPUs {','.join(devices)} stayed held for {wait_s:.0f} s "
                f"(locks in {lock_dir}); run fewer gpu jobs at once "
                f"(--resources gpu=N, N at most the number of GPUs)"
            )
        if not waiting:
            log.info("all GPUs %s are held by other jobs; waiting", ",".join(devices))
            waiting = True
        time.sleep(poll_s)


def release(device: str):
    """Give a claimed device back before the process ends (tests; jobs just exit)."""
    fd = _held.pop(device, None)
    if fd is not None:
        os.close(fd)


def has_gpu():
    """True when torch sees a CUDA device. First claims a free GPU for this job (Snakemake sets
    no CUDA_VISIBLE_DEVICES for local jobs), before anything touches CUDA."""
    claim()
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def resolve_dtype(dtype: str, gpu: bool) -> str:
    """`auto`: bfloat16 on a GPU or a CPU with native bf16 (AVX512-BF16, AMX); float32 on
    other CPUs, where bf16 matmuls are emulated and several times slower."""
    if dtype != "auto":
        return dtype
    if gpu:
        return "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"
