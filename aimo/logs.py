"""Logging for stage scripts: everything to the job's log file, progress also to the terminal."""

import logging
import os
import sys


class OneLine(logging.Formatter):
    """A record's line without its traceback (that goes to the log file only)."""

    def format(self, record):
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


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
    fmt = "%(asctime)s %(name)s %(levelname)s %(message)s"
    to_file = logging.StreamHandler(stream)
    to_file.setFormatter(logging.Formatter(fmt))
    to_terminal = logging.StreamHandler(terminal)
    to_terminal.setFormatter(OneLine(fmt))
    to_terminal.addFilter(lambda record: record.name.startswith("aimo"))
    logging.basicConfig(level=logging.INFO, handlers=[to_file, to_terminal], force=True)
    return terminal


def attach(log_path):
    """Logging into `log_path` without taking the process's output (a notebook's cell shows
    it): every logger's records at INFO into the file, the aimo lines also on stderr unless
    the process already logs somewhere. Idempotent per file."""
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    root = logging.getLogger()
    path = os.path.abspath(log_path)
    if any(getattr(h, "baseFilename", None) == path for h in root.handlers):
        return
    fmt = "%(asctime)s %(name)s %(levelname)s %(message)s"
    if not root.handlers:
        to_terminal = logging.StreamHandler(sys.stderr)
        to_terminal.setFormatter(OneLine(fmt))
        to_terminal.addFilter(lambda record: record.name.startswith("aimo"))
        root.addHandler(to_terminal)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(fmt))
    root.addHandler(to_file)
    root.setLevel(logging.INFO)
