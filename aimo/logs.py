"""Logging for stage scripts: everything to the job's log file, progress also to the terminal."""

import logging
import os
import sys


def setup(log_path):
    """Send this process's output, logging and that of its children (the vLLM engine core,
    which logs to stdout) to `log_path`; keep the aimo progress lines on the terminal so a user
    sees the run advance. Returns the terminal's stream (for a progress bar)."""
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    stream = open(log_path, "a", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(stream.fileno(), 1)  # children inherit fds 1 and 2
    os.dup2(stream.fileno(), 2)
    sys.stdout = sys.stderr = stream
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    to_file = logging.StreamHandler(stream)
    to_file.setFormatter(fmt)
    to_terminal = logging.StreamHandler(terminal)
    to_terminal.setFormatter(fmt)
    to_terminal.addFilter(lambda record: record.name.startswith("aimo"))
    logging.basicConfig(level=logging.INFO, handlers=[to_file, to_terminal], force=True)
    return terminal
