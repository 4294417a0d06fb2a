"""The trace inspector: a static site of a run's traces, with the flags people look for.

`build_site(run, out_dir)` writes `out_dir/index.html` (every problem: its answers, each
strategy's pick, right or wrong, tokens and flags; sortable and filterable; pass@1 with its
standard error, the no-answer rate, the vote's ties) and one page per problem (every trace as
the model wrote it, its code and the outputs it got, finish reason, tokens, confidences, its
weights in the vote, parent and child traces). `build_compare(a, b, out_dir)` writes the
problems right in one run and wrong in the other, with both runs' traces. A run is a workflow
results folder or an online run folder (`locate`), or a Run naming its files.

Layers: flags and stats read rows only; gather reads the files and runs the vote's SQL; pages
render (Jinja2, autoescape on) and write. Nothing here changes a run's files.
"""

from aimo.inspector.gather import Run, gather, locate, read_submission
from aimo.inspector.pages import write_compare, write_site

__all__ = ["Run", "locate", "read_submission", "build_site", "build_compare"]


def build_site(run: Run, out_dir):
    """The site of `run` in `out_dir`; returns its index.html."""
    return write_site(gather(run), out_dir)


def build_compare(a: Run, b: Run, out_dir):
    """The comparison of runs `a` and `b` in `out_dir`; returns its index.html."""
    return write_compare(gather(a), gather(b), out_dir)
