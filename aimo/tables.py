"""Reading and writing the workflow's Parquet tables: atomic writes, schema checks, metadata.

A file is written to a temporary name beside its target and renamed into place, so a job that
dies mid-write leaves no partial file for Snakemake (or a user) to mistake for a result.
"""

import hashlib
import json
import os
import tempfile
import urllib.parse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aimo.schemas import ADDED, TIMING


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it to read
    it back would, for a moment, give any file another thread creates the wrong mode)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def file_mode() -> int:
    """The mode a plain new file gets under the process's umask (0o644 under 022)."""
    return 0o666 & ~_umask()


def make_readable(folder) -> None:
    """Give every file under `folder` the read bits the umask allows (savers such as
    transformers' leave their weights 0600, which would outlive the folder's rename)."""
    readable = 0o444 & file_mode()
    for f in Path(folder).rglob("*"):
        if f.is_file() and not f.is_symlink():
            f.chmod(f.stat().st_mode | readable)


def atomic_path(path):
    """A fresh temporary file beside `path` (same filesystem, so os.replace is atomic), with
    the mode of a plain new file: mkstemp's 0600 would outlive the rename and hide results from
    the rest of a team sharing the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, file_mode())
    os.close(fd)
    return Path(tmp)


def file_name(key: str, suffix: str = "") -> str:
    """A file name for `key` (a problem id, which may hold `/`, `..`, spaces or anything):
    percent-escaped, so it never names a folder or leaves one; a leading dot escaped too (no
    hidden file, no `..`), and a long key cut and told apart by its hash (names stay under 255
    bytes). Distinct keys give distinct names."""
    name = urllib.parse.quote(key, safe="-_.~+=@,")
    if name.startswith(".") or not name:
        name = "%2E" + name[1:] if name else "%"  # quote never writes a lone %
    if len(name) > 200:
        name = name[:160] + "~" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return name + suffix


def write_table(rows_or_table, path, schema, metadata=None):
    """Write rows (list of dicts) or a table with `schema` to `path`, atomically.

    `metadata` (a dict of JSON-able values) goes into the file's key-value metadata under
    `aimo.<key>`.
    """
    if isinstance(rows_or_table, pa.Table):
        table = rows_or_table.select(schema.names).cast(schema)
    else:
        table = pa.Table.from_pylist(list(rows_or_table), schema=schema)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta.update({f"aimo.{k}".encode(): json.dumps(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(meta)
    tmp = atomic_path(path)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return table


def write_text(text, path):
    """Write a text file atomically."""
    tmp = atomic_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_table(path, schema):
    """Read a Parquet file and check it has every column of `schema`; name what is missing."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc
    missing = [n for n in schema.names if n not in table.column_names]
    for name in [n for n in missing if n in ADDED]:  # written before the column was
        table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
        missing.remove(name)
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; expected the schema {schema.names} "
            "(a shard from another version of the workflow?)"
        )
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{path}: a column has the wrong type: {exc}") from exc


def read_metadata(path):
    """The `aimo.*` key-value metadata of a Parquet file, decoded."""
    meta = pq.read_schema(path).metadata or {}
    return {k.decode()[5:]: json.loads(v) for k, v in meta.items() if k.startswith(b"aimo.")}


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"  # NaN equals itself here
    return value


def comparable(rows) -> list[dict]:
    """Rows (dicts) as they must agree between two runs on the same inputs: every column but
    the timings (schemas.TIMING, nested fields too)."""
    return [_untimed(r) for r in rows]


def comparable_rows(path) -> list[dict]:
    """The comparable rows of a Parquet file (its metadata left out)."""
    return comparable(pq.read_table(path).to_pylist())
