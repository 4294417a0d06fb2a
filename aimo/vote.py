"""Voting over many sampled solutions per problem, in DuckDB.

Each strategy (declared once, in aimo/strategies.py) is one query in `aimo/sql/` over
`candidates.sql` (one row per trace with its weight under every strategy); `rank.sql` turns the
per-answer tallies into one VOTES row per problem with a total tie-break order (higher score,
then more votes, then the smaller answer). The queries take their weights as DuckDB prepared
parameters. See docs/answers_and_votes.md.

Inputs are checked before any vote: every shard must exist, be Parquet, have the columns the vote
reads with compatible types, and name only the known sources; a path may not be given twice and
trace ids may not repeat across shards; traces must belong to problems in the problems file. A
failure is a ValueError naming the file and the column. Answers that cannot be voted (NULL
answer_int: no answer, not an integer, beyond int64; negative or above 99999) get a zero weight
by design (the `invalid` weight, 0 by default), never an error.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from aimo.answers import ANSWER_MAX, ANSWER_MIN
from aimo.schemas import CANCELLED, EXECUTIONS, PROBLEMS, TRACES, VOTES
from aimo.strategies import BY_NAME, DEFAULT, NAMES, load_sql, strategy_sql
from aimo.strategies import check as check_strategies
from aimo.tables import read_table, write_table

__all__ = [
    "STRATEGIES",
    "DEFAULT_WEIGHTS",
    "DEFAULT_MIX",
    "SOURCES",
    "VoteSettings",
    "vote",
    "vote_table",
    "load_sql",
    "check_strategies",
    "Candidates",
]

STRATEGIES = NAMES  # declared once, in aimo/strategies.py
DEFAULT_WEIGHTS = {"invalid": 0.0, "clean_code": 2.0, "other": 1.0}
# share_confidence: vote share, confidence and consensus mixed (candidates.sql); the defaults
# are the AIMO3 2nd place's write-up (2.0 / 0.3 / 0.5)
DEFAULT_MIX = {"share": 2.0, "confidence": 0.3, "consensus": 0.5}
SOURCES = ("generate", "reflexion", "critique")


def family(typ: pa.DataType) -> str:
    """The type family of a schema's column, which a shard's column must belong to (so that a
    shard written by another version, e.g. int32 for int64, still reads)."""
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "string"
    if pa.types.is_integer(typ):
        return "integer"
    if pa.types.is_floating(typ):
        return "floating"
    if pa.types.is_boolean(typ):
        return "boolean"
    raise TypeError(f"no vote type family for {typ}")


def _families(schema: pa.Schema, names) -> dict:
    return {name: family(schema.field(name).type) for name in names}


# the columns the vote reads (their types are those of aimo/schemas.py)
TRACE_COLUMNS = _families(
    TRACES,
    (
        "trace_id",
        "problem_id",
        "source",
        "answer_int",
        "mean_logprob",
        "parent_id",
        "finish_reason",
        "mean_entropy",
        "tail_entropy",
        "min_conf",
        "tail_conf",
    ),
)
EXECUTION_COLUMNS = _families(EXECUTIONS, ("trace_id", "exec_status", "agrees"))
# extra trace columns a caller (the evaluation) may ask for
OPTIONAL_TRACE_COLUMNS = _families(TRACES, ("sample", "completion_tokens", "prompt_tokens"))
# the two execution flags of a trace (candidates.sql documents them)
_FLAG_SQL = {
    "clean": "coalesce(t.trace_id IN (SELECT trace_id FROM executions "
    "WHERE exec_status = 'ok'), false)",
    "verified": "coalesce(t.trace_id IN (SELECT trace_id FROM executions WHERE agrees), false)",
}
# false for a trace that a critique with a valid answer reviews (critique_replace only)
_COUNTED_SQL = (
    "coalesce(t.trace_id NOT IN (SELECT parent_id FROM trace_rows WHERE source = "
    "'critique' AND parent_id IS NOT NULL AND answer_int BETWEEN "
    f"{ANSWER_MIN} AND {ANSWER_MAX}), true)"
)
# false for a trace the scheduler cancelled (unless count_cancelled)
_FINISHED_SQL = "coalesce(t.finish_reason NOT IN ({}), true)".format(
    ", ".join(f"'{r}'" for r in CANCELLED)
)
# false for a trace pruned for low confidence, or never started (no sample at all: it would
# count as a wrong one in the evaluation's pool): it never votes, even where cancelled ones do
_UNPRUNED_SQL = "coalesce(t.finish_reason NOT IN ('pruned', 'not_started'), true)"
_DUCK_TYPES = {"string": "VARCHAR", "integer": "BIGINT", "floating": "DOUBLE", "boolean": "BOOLEAN"}


def _numbers(what: str, given, defaults: dict) -> dict:
    """`defaults` updated with `given`, every value a finite number >= 0; else a ValueError."""
    merged = dict(defaults)
    if given:
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ValueError(f"unknown {what} {unknown}; valid keys: {sorted(defaults)}")
        merged.update(given)
    out = {}
    for key, value in merged.items():
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"weight {key}={value!r} is not a number") from None
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"weight {key}={value!r} must be a finite number >= 0")
        out[key] = f
    return out


@dataclass(frozen=True)
class VoteSettings:
    """Everything a vote depends on besides its inputs: the config's `vote` section.

    strategy: the strategy of the submission; weights: the weighted vote's {invalid, clean_code,
    other}; critique_weight: a critique row's weight relative to the others; critique_replace: a
    critique with a valid answer takes its parent's vote instead of adding one; count_cancelled:
    traces the scheduler cancelled vote too, each with cancelled_weight (relative to a finished
    trace's); mix: share_confidence's {share, confidence,
    consensus}; entropy_floor: the smallest entropy an entropy weight (1 / entropy) divides by;
    filter_keep: the share of a problem's traces the filter strategies keep (DeepConf offline).
    Checked once, on creation (a ValueError names the bad key).
    """

    strategy: str = DEFAULT
    weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    critique_weight: float = 1.0
    critique_replace: bool = False
    count_cancelled: bool = False
    cancelled_weight: float = 1.0
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    entropy_floor: float = 1e-3
    filter_keep: float = 0.5

    def __post_init__(self):
        set_ = object.__setattr__.__get__(self)  # frozen: normalise the fields once, here
        set_("strategy", check_strategies([self.strategy])[0])
        set_("weights", _numbers("weight(s)", self.weights, DEFAULT_WEIGHTS))
        set_("mix", _numbers("share_confidence weight(s)", self.mix, DEFAULT_MIX))
        scalars = _numbers(
            "setting",
            {
                "critique_weight": self.critique_weight,
                "cancelled_weight": self.cancelled_weight,
                "entropy_floor": self.entropy_floor,
            },
            {"critique_weight": 1.0, "cancelled_weight": 1.0, "entropy_floor": 1e-3},
        )
        if not isinstance(self.filter_keep, (int, float)) or not 0 < self.filter_keep <= 1:
            raise ValueError(f"filter_keep={self.filter_keep!r} must be a share in (0, 1]")
        if scalars["entropy_floor"] <= 0:
            raise ValueError(f"entropy_floor={self.entropy_floor!r} must be > 0")
        set_("critique_weight", scalars["critique_weight"])
        set_("cancelled_weight", scalars["cancelled_weight"])
        set_("entropy_floor", scalars["entropy_floor"])
        for name in ("critique_replace", "count_cancelled"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be true or false")

    @classmethod
    def of(cls, settings=None) -> "VoteSettings":
        """VoteSettings from itself, None (the defaults) or a config's `vote` section."""
        if settings is None or isinstance(settings, cls):
            return settings or cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown vote setting(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**settings)

    def replace(self, **changes) -> "VoteSettings":
        return dataclasses.replace(self, **changes)

    def params(self) -> dict:
        """The SQL's prepared parameters (candidates.sql)."""
        return {
            **self.weights,
            "critique_weight": self.critique_weight,
            "cancelled_weight": self.cancelled_weight,
            **{f"mix_{k}": v for k, v in self.mix.items()},
            "entropy_floor": self.entropy_floor,
            "filter_keep": float(self.filter_keep),
        }

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _paths(paths, what: str) -> list[str]:
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out, seen = [], {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise ValueError(f"{p}: {what} shard not found")
        key = p.resolve()
        if key in seen:
            raise ValueError(
                f"{p}: {what} shard given twice (also as {seen[key]}); its rows "
                "would be counted twice"
            )
        seen[key] = p
        out.append(str(p))
    return out


def _family_ok(typ: pa.DataType, family: str) -> bool:
    if pa.types.is_null(typ):
        return True  # an all-null column (e.g. an empty shard written without a schema)
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if family == "string":
        return (
            pa.types.is_string(typ)
            or pa.types.is_large_string(typ)
            or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(typ))
        )
    if family == "integer":
        return pa.types.is_integer(typ) and typ != pa.uint64()  # uint64 may not fit BIGINT
    if family == "floating":
        return pa.types.is_floating(typ) or pa.types.is_integer(typ)
    if family == "boolean":
        return pa.types.is_boolean(typ)
    raise AssertionError(family)


def _check_shard(path: str, columns: dict, what: str) -> tuple[int, pa.Schema]:
    """Check one shard's schema; return its row count."""
    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc
    for name, family in columns.items():
        if name not in schema.names:
            raise ValueError(
                f"{path}: {what} shard has no column {name!r} (columns: {schema.names}); a shard "
                "from another version of the workflow?"
            )
        typ = schema.field(name).type
        if not _family_ok(typ, family):
            raise ValueError(
                f"{path}: column {name!r} has type {typ}, expected {family} "
                f"(a shard from another version of the workflow?)"
            )
    return meta.num_rows, schema


def _trace_id_ranges_disjoint(paths: list[str]) -> bool:
    """True when Parquet statistics prove that no trace_id repeats across row groups.

    Each row group's min/max of trace_id is read from the file footers (no data is read); when
    the ranges are pairwise disjoint no id can be in two row groups. Shards written per problem
    (the workflow's layout) pass this test at no cost; otherwise the caller runs an exact check.
    """
    ranges = []
    for path in paths:
        md = pq.read_metadata(path)
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            if rg.num_rows == 0:
                continue
            col = next(
                (
                    rg.column(j)
                    for j in range(rg.num_columns)
                    if rg.column(j).path_in_schema == "trace_id"
                ),
                None,
            )
            st = col.statistics if col is not None else None
            if st is None or not st.has_min_max:
                return False
            ranges.append((st.min, st.max))
    ranges.sort()
    return all(a[1] < b[0] for a, b in zip(ranges, ranges[1:]))


class Candidates:
    """A DuckDB connection holding the candidate rows of one vote or evaluation.

    Creates the views `traces`, `executions` and `problems` (checked), and materialises or
    inlines `candidates` (candidates.sql) with the weights. `tallies(strategy)` and
    `votes(strategy)` run the strategy queries.
    """

    def __init__(
        self,
        problems_path,
        trace_paths,
        execution_paths,
        settings=None,
        extra_trace_columns=(),
        strategies=None,
        materialise=False,
    ):
        self.settings = settings = VoteSettings.of(settings)
        self.params = {**settings.params(), "answer_min": ANSWER_MIN, "answer_max": ANSWER_MAX}
        # the one check of a vote's strategies (settings.strategy was checked with the settings)
        strategies = [settings.strategy] if strategies is None else check_strategies(strategies)
        self.strategies = strategies
        self._tallies = {}
        self.con = duckdb.connect()
        self.con.execute("SET preserve_insertion_order = false")
        self.problems = read_table(problems_path, PROBLEMS)
        self.problems_path = str(problems_path)
        ids = self.problems.column("problem_id")
        if len(ids) != len(ids.unique()):
            raise ValueError(f"{problems_path}: column 'problem_id' has duplicate values")
        self.con.register("problems", self.problems)

        trace_cols = dict(TRACE_COLUMNS)
        for name in extra_trace_columns:
            trace_cols[name] = OPTIONAL_TRACE_COLUMNS[name]
        self.trace_paths = _paths(trace_paths, "trace")
        self.execution_paths = _paths(execution_paths, "execution")
        self.n_traces = sum(_check_shard(p, trace_cols, "trace")[0] for p in self.trace_paths)
        for p in self.execution_paths:
            _check_shard(p, EXECUTION_COLUMNS, "execution")
        self._view("trace_rows", self.trace_paths, trace_cols)
        self._view("executions", self.execution_paths, EXECUTION_COLUMNS)
        needs = set().union(*(BY_NAME[s].needs for s in strategies))
        flags = {
            name: (_FLAG_SQL[name] if name in needs and self.execution_paths else "false")
            for name in ("clean", "verified")
        }
        # can_vote: the row rule alone; counted: that, and not replaced by a critique
        can_vote = _UNPRUNED_SQL if settings.count_cancelled else _FINISHED_SQL
        counted = f"{can_vote} AND {_COUNTED_SQL}" if settings.critique_replace else can_vote
        self.con.execute(
            f"CREATE TEMP VIEW traces AS SELECT t.*, {flags['clean']} AS clean, "
            f"{flags['verified']} AS verified, {can_vote} AS can_vote, {counted} AS counted "
            "FROM trace_rows AS t"
        )
        self._check_unique_traces()
        self.materialised = False
        if materialise:
            # keep what the strategies and the evaluation read; trace_id and parent_id (long
            # strings) are only needed for the joins that make the flags
            sql = load_sql("candidates")
            self._run(
                lambda: self.con.execute(
                    "CREATE TEMP TABLE candidates AS SELECT * EXCLUDE (trace_id, parent_id, "
                    "mean_logprob, mean_entropy, tail_entropy, min_conf, tail_conf, clean, "
                    f"source_weight) FROM (\n{sql}\n)",
                    self.sql_params(sql),
                )
            )
            self.materialised = True

    # -- setup --------------------------------------------------------------------------------
    def _view(self, name, paths, columns):
        if paths:
            select = ", ".join(f"CAST({c} AS {_DUCK_TYPES[f]}) AS {c}" for c, f in columns.items())
            rel = self.con.sql(
                f"SELECT {select} FROM read_parquet($files, union_by_name = true)",
                params={"files": paths},
            )
        else:
            select = ", ".join(f"CAST(NULL AS {_DUCK_TYPES[f]}) AS {c}" for c, f in columns.items())
            rel = self.con.sql(f"SELECT {select} WHERE false")
        rel.create_view(name)

    def _run(self, fn):
        """Run `fn` (a DuckDB call); turn candidates.sql's unknown-source error into a
        ValueError that names the shard."""
        try:
            return fn()
        except duckdb.Error as exc:
            if "aimo: unknown source" not in str(exc):
                raise
            where = self.con.execute(
                "SELECT filename, source FROM read_parquet($files, union_by_name = true, "
                "filename = true) WHERE source IS NULL OR NOT list_contains($sources, source) "
                "LIMIT 1",
                {"files": self.trace_paths, "sources": list(SOURCES)},
            ).fetchone()
            where = where or ("a trace shard", "?")
            raise ValueError(
                f"{where[0]}: column 'source' has the value {where[1]!r}; the vote "
                f"knows only {', '.join(SOURCES)}"
            ) from None

    def _check_unique_traces(self):
        if not self.trace_paths or _trace_id_ranges_disjoint(self.trace_paths):
            return
        dup = self.con.execute(
            "SELECT trace_id, count(*) FROM trace_rows GROUP BY trace_id HAVING count(*) > 1 "
            "LIMIT 1"
        ).fetchone()
        if dup:
            files = self.con.execute(
                "SELECT DISTINCT filename FROM read_parquet($files, union_by_name = true, "
                "filename = true) WHERE trace_id = $tid ORDER BY 1",
                {"files": self.trace_paths, "tid": dup[0]},
            ).fetchall()
            raise ValueError(
                f"column 'trace_id': the trace {dup[0]!r} appears {dup[1]} times, in "
                f"{', '.join(f[0] for f in files)}; overlapping shards would count it twice"
            )

    def sql_params(self, sql: str) -> dict:
        """The weights that `sql` uses as $parameters (comments do not count)."""
        code = re.sub(r"--[^\n]*", "", sql)
        used = set(re.findall(r"\$([A-Za-z_]\w*)", code))
        return {k: v for k, v in self.params.items() if k in used}

    def query(self, strategy_sql: str, extra_params=None):
        """Run a query over `candidates` (inlined as a CTE unless materialised)."""
        if self.materialised:
            sql = strategy_sql
        else:
            sql = f"WITH candidates AS (\n{load_sql('candidates')}\n)\n{strategy_sql}"
        params = self.sql_params(sql)
        params.update(extra_params or {})
        return self.con.sql(sql, params=params)

    def arrow(self, sql: str, extra_params=None) -> pa.Table:
        """`query(sql)` as an Arrow table (errors translated, see `_run`)."""
        return self._run(lambda: self.query(sql, extra_params).to_arrow_table())

    # -- voting -------------------------------------------------------------------------------
    def tallies(self, strategy: str) -> pa.Table:
        """Per (problem_id, answer): score and votes under `strategy`."""
        if strategy not in self.strategies:
            raise ValueError(
                f"strategy {strategy!r} was not declared when opening the "
                f"candidates (declared: {self.strategies})"
            )
        if strategy not in self._tallies:
            table = self.arrow(strategy_sql(strategy))
            self._check_problems(table)
            self._tallies[strategy] = table
        return self._tallies[strategy]

    def _check_problems(self, tallies: pa.Table):
        known = set(self.problems.column("problem_id").to_pylist())
        seen = set(tallies.column("problem_id").unique().to_pylist())
        stray = sorted("NULL" if x is None else x for x in seen - known)
        if stray:
            raise ValueError(
                f"column 'problem_id': {len(stray)} problem(s) in the trace shards are not in "
                f"{self.problems_path} (e.g. {stray[:3]}); traces from another run?"
            )

    def votes(self, strategy: str) -> pa.Table:
        """The VOTES rows of `strategy`, one per problem of the problems file."""
        tallies = self.tallies(strategy)
        self.con.register("tallies", tallies)
        try:
            table = self.con.sql(load_sql("rank"), params={"strategy": strategy}).to_arrow_table()
        finally:
            self.con.unregister("tallies")
        return table.select(VOTES.names).cast(VOTES)

    def close(self):
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def vote_table(
    problems_path, trace_paths, execution_paths, settings=None, strategies=None
) -> pa.Table:
    """VOTES rows of `settings.strategy`, or of every strategy in `strategies`, stacked.

    `settings`: a VoteSettings or a config's `vote` section (default: the defaults);
    `strategies`: names to vote side by side (default: the settings' own). One row per
    (problem, strategy), problems in problem_id order within each strategy.
    """
    with Candidates(
        problems_path,
        trace_paths,
        execution_paths,
        settings,
        strategies=strategies,
        materialise=strategies is not None and len(strategies) > 1,
    ) as cands:
        tables = [cands.votes(s) for s in cands.strategies]
    return pa.concat_tables(tables)


def vote(problems_path, trace_paths, execution_paths, out_path, settings=None) -> pa.Table:
    """Vote with `settings.strategy` and write the VOTES table to `out_path` atomically.

    `settings`: a VoteSettings or a config's `vote` section (see VoteSettings). Returns the
    table written; its metadata holds the settings.
    """
    settings = VoteSettings.of(settings)
    table = vote_table(problems_path, trace_paths, execution_paths, settings)
    return write_table(
        table,
        out_path,
        VOTES,
        metadata={"strategy": settings.strategy, "settings": settings.as_dict()},
    )
