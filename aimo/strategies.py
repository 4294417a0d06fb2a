"""The vote strategies, each declared once: its name, its query, the execution flags it reads and
what it does. The vote (aimo/vote.py), the check of a strategy's name, the config schema's enum
(a test holds them equal) and the evaluation's curves (aimo/subsets.py) all read this table; a
strategy is never spelled anywhere else. This module only names and loads SQL: it runs nothing.

To add a strategy: write its query in `aimo/sql/<name>.sql` (per problem and answer: score and
votes, over `candidates`; rank.sql picks the winner), add its weight column to candidates.sql if
it needs a new one, add one row to DECLARED, and its name to schemas/config.schema.yaml's
vote.strategy enum.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["Strategy", "DECLARED", "NAMES", "DEFAULT", "load_sql", "strategy_sql", "check"]


@dataclass(frozen=True)
class Strategy:
    """One vote strategy.

    sql: the query's file, `aimo/sql/<sql>.sql`; needs: the execution flags of candidates.sql it
    reads (clean, verified), the others are set to false so DuckDB pays no join on trace_id;
    conf: for a template (filter_conf.sql), the confidence it ranks by (`min` or `tail`, the
    `{conf}` in the template's column names c_{conf}, known_{conf}, w_{conf}_conf).
    """

    name: str
    sql: str
    needs: frozenset = frozenset()
    description: str = ""
    conf: str | None = None


DECLARED = (
    Strategy(
        "weighted",
        "weighted",
        frozenset({"clean"}),
        "the plan's vote: clean code counts vote.weights.clean_code, other valid answers other",
    ),
    Strategy("majority", "majority", description="plain majority of the valid answers"),
    Strategy("logprob", "logprob", description="each trace weighs exp(mean log-probability)"),
    Strategy(
        "verified",
        "verified",
        frozenset({"clean", "verified"}),
        "weighted, among the traces whose code re-run printed their answer (else all)",
    ),
    Strategy("entropy", "entropy", description="each trace weighs 1 / its mean token entropy"),
    Strategy(
        "tail_entropy",
        "tail_entropy",
        description="each trace weighs 1 / the entropy of its last tokens before the answer",
    ),
    Strategy(
        "share_confidence",
        "share_confidence",
        frozenset({"verified"}),
        "vote share, confidence and code consensus mixed (vote.mix; AIMO3 2nd place)",
    ),
    Strategy(
        "filter_min_conf",
        "filter_conf",
        description="DeepConf offline: the vote.filter_keep most confident by the lowest "
        "window's confidence, then a confidence-weighted vote",
        conf="min",
    ),
    Strategy(
        "filter_tail_conf",
        "filter_conf",
        description="the same, ranked by the confidence of the tail tokens",
        conf="tail",
    ),
)
NAMES = tuple(s.name for s in DECLARED)
BY_NAME = {s.name: s for s in DECLARED}
DEFAULT = "share_confidence"  # the vote benchmark's winner (README): the submission's default


def load_sql(name: str) -> str:
    """The text of `aimo/sql/<name>.sql`."""
    try:
        return resources.files("aimo").joinpath("sql", f"{name}.sql").read_text(encoding="utf-8")
    except FileNotFoundError:  # pragma: no cover - a broken install
        return (Path(__file__).parent / "sql" / f"{name}.sql").read_text(encoding="utf-8")


def strategy_sql(name: str) -> str:
    """The query of strategy `name`, its template filled in."""
    s = BY_NAME[name]
    sql = load_sql(s.sql)
    # only identifiers are substituted (column names cannot be prepared parameters)
    return sql.replace("{conf}", s.conf) if s.conf else sql


def check(strategies) -> list[str]:
    """`strategies` (a name or names) as a list, each a declared strategy; else a ValueError."""
    if isinstance(strategies, str):
        strategies = [strategies]
    strategies = list(strategies)
    bad = [s for s in strategies if s not in BY_NAME]
    if bad or not strategies:
        raise ValueError(
            f"unknown strategy {bad or strategies!r}; valid strategies: {', '.join(NAMES)}"
        )
    return strategies
