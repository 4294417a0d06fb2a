"""Which protections the sandbox server reports missing, and what the client does about it
(`report`): say it once in the log, or raise SandboxError where the machine offers what they
need. Used by `Sandbox` (client.py) when its server is first ready.
"""

from __future__ import annotations

import logging
import os

from aimo.sandbox.limits import SandboxError

log = logging.getLogger("aimo.sandbox")

_PROTECTION_NAMES = {
    "uid": "separate unprivileged uids (code could write the run's files, signal other sessions)",
    "netns": "network isolation",
    "pidns": "a pid namespace (if the server is killed, processes that called setsid() may survive)",
    "private_tmp": "a private /tmp per session",
    "memory_cgroup": "a memory cap per session and for the pool (a session may hold processes x memory_mb,"
    " and the kernel's OOM killer may pick the inference engine)",
}
_EXPECTED_NAMES = dict(
    _PROTECTION_NAMES,
    mountns="a mount namespace",
    ipcns="an ipc namespace",
    proc="a private /proc",
    netns_per_session="a network namespace per session",
    hidden_paths="hidden paths (hide_paths)",
)
_logged = set()


def _log_once(level, text):
    if text not in _logged:
        _logged.add(text)
        log.log(level, text)


def report(info, hide_paths, accept_missing):
    """Say once which protections are missing and why; raise SandboxError instead where the
    machine offers what they need (root, namespaces) and `accept_missing` is false."""
    prot, notes = info["protections"], info.get("notes", {})
    absent = [k for k in _PROTECTION_NAMES if not prot.get(k)]
    absent += [k for k in info.get("expected", []) if not prot.get(k) and k not in absent]
    hide = [p for p in hide_paths if os.path.exists(p)]
    if set(hide) - set(prot.get("hidden_paths") or []):
        absent.append("hidden_paths")
    texts = []
    for key in absent:
        why = _why(key, notes)
        texts.append(f"{_EXPECTED_NAMES[key]} ({why})" if why else _EXPECTED_NAMES[key])
    should = [
        t for k, t in zip(absent, texts) if k in info.get("expected", []) or k == "hidden_paths"
    ]
    if should and info.get("strict") and not accept_missing:
        raise SandboxError(
            "sandbox protections missing although this machine offers what they need (root, "
            f"namespaces): {'; '.join(should)}. Fix the cause, or set sandbox.accept_missing: true "
            "(Limits(accept_missing=True)) to run without them (see docs/sandbox.md)"
        )
    if texts:
        _log_once(logging.WARNING, "sandbox running without: " + "; ".join(texts))
    log.debug("sandbox server ready in %.2f s: %s", info.get("client_startup_s", 0), prot)


def _why(key, notes):
    alias = {"private_tmp": "mountns", "netns_per_session": "netns"}.get(key, key)
    if key == "hidden_paths":
        return (
            "; ".join(
                v if k == "hide_paths" else f"{k[5:]}: {v}"
                for k, v in notes.items()
                if k.startswith("hide")
            )
            or None
        )
    return (
        notes.get(key)
        or notes.get(f"session {key}")
        or notes.get(alias)
        or notes.get(f"session {alias}")
        or (notes.get("expose") if key == "uid" else None)
    )
