"""Logging for stage scripts: everything to the job's log file, progress also to the terminal."""
import logging
import os
import sys


def setup(log_path):
    """Send this process's logging and its stderr (vLLM, child processes) to `log_path`;
    keep the aimo progress lines on stdout so a user sees the run advance."""
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    stream = open(log_path, "a", buffering=1, encoding="utf-8")
    os.dup2(stream.fileno(), 2)  # children (the vLLM engine core) inherit fd 2
    sys.stderr = stream
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    to_file = logging.StreamHandler(stream)
    to_file.setFormatter(fmt)
    to_terminal = logging.StreamHandler(sys.stdout)
    to_terminal.setFormatter(fmt)
    to_terminal.addFilter(lambda record: record.name.startswith("aimo"))
    logging.basicConfig(level=logging.INFO, handlers=[to_file, to_terminal], force=True)
