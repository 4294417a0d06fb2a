"""The inspector's static site, written from gathered runs (aimo.inspector.gather): an index
and one page per problem, or a comparison of two runs. Each page is one self-contained HTML
file (inline style, no network, no framework), rendered by Jinja2 with autoescape on and
written atomically; the index last, so a site with an index is whole. Model text is untrusted:
it only ever reaches a page escaped, as text.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from aimo.answers import box_spans  # extraction's own finder of \\boxed{} spans
from aimo.inspector.flags import FLAGS
from aimo.inspector.gather import WEIGHTS
from aimo.prompts import CODE_FENCE, FENCE_END, OUTPUT_FENCE
from aimo.schemas import NOT_RUN, OK
from aimo.strategies import NAMES
from aimo.tables import file_name, write_text
from aimo.vote import SOURCES

__all__ = ["segments", "write_site", "write_compare", "compare_rows", "PAGES"]

PAGES = "problems"  # the folder of the problem pages, beside index.html
# A call and its output in each tir.dialect (aimo/dialects.py): fenced blocks; hermes calls and
# the template's <tool_response> (tools); harmony's message to=python and python's reply
_BLOCK_RE = re.compile(
    "|".join(
        (
            f"{re.escape(CODE_FENCE)}[ \\t]*\\n(?P<fenced>.*?)(?:\\n?{re.escape(FENCE_END)}|\\Z)",
            f"{re.escape(OUTPUT_FENCE)}[ \\t]*\\n(?P<fenced_out>.*?)(?:\\n?{re.escape(FENCE_END)}|\\Z)",
            r"<tool_call>\s*(?P<hermes>.*?)\s*(?:</tool_call>|\Z)",
            r"<tool_response>\n?(?P<hermes_out>.*?)\n?(?:</tool_response>|\Z)",
            r"to=python[^<\n]*(?:<\|constrain\|>[^<]*)?<\|message\|>(?P<harmony>.*?)"
            r"(?:<\|call\|>|\Z)",
            r"<\|start\|>python to=assistant<\|channel\|>\w+<\|message\|>(?P<harmony_out>.*?)"
            r"(?:<\|end\|>|\Z)",
        )
    ),
    re.DOTALL,
)


_LOADER = PackageLoader("aimo.inspector", "templates")  # aimo/inspector/templates/
STYLE = _LOADER.get_source(None, "style.css")[0]
# the index's one script (sort and filter), allowed by its hash: no other script runs on a page
SCRIPT = _LOADER.get_source(None, "sort_filter.js")[0]
_SCRIPT_HASH = Markup(
    f"'sha256-{base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()}'"
)
_NO_SCRIPT = Markup("'none'")


def _num(x):
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


def _env() -> Environment:
    env = Environment(
        loader=_LOADER,
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, pct=_pct)
    env.globals.update(
        style=STYLE,
        labels={f.name: f.label for f in FLAGS},
        flags=FLAGS,
        weights=WEIGHTS,
        sources=SOURCES,
        strategies=NAMES,
    )
    return env


def _prose(out: list, text: str):
    text = text.strip("\n")
    if not text.strip():
        return
    parts, pos = [], 0
    for start, end, _ in box_spans(text):
        parts += [(False, text[pos:start]), (True, text[start:end])]
        pos = end
    parts.append((False, text[pos:]))
    out.append({"kind": "prose", "parts": [(boxed, s) for boxed, s in parts if s]})


def segments(text: str | None, blocks) -> list:
    """A trace's text cut into what it shows: prose (with its \\boxed{} spans marked), code
    blocks, and their outputs with the status and seconds of the block that made them (the
    k-th output is the k-th code block run; one past them was never run). Every dialect's
    calls: fenced blocks, hermes tool calls (shown as the code the block ran, its JSON where
    it never ran), harmony's python messages."""
    text, blocks, out, pos, k, c = text or "", list(blocks or []), [], 0, 0, 0
    for m in _BLOCK_RE.finditer(text):
        _prose(out, text[pos : m.start()])
        kind = m.lastgroup
        if not kind.endswith("_out"):
            code = m.group(kind)
            if kind == "hermes" and c < len(blocks):
                code = blocks[c]["code"]  # the call's code as the tools dialect read it
            c += 1
            out.append({"kind": "code", "text": code})
        else:
            b = blocks[k] if k < len(blocks) else None
            k += 1
            out.append(
                {
                    "kind": "output",
                    "text": m.group(kind),
                    "status": b["status"] if b else None,
                    "wall_s": b["wall_s"] if b else None,
                    "failed": b is not None and b["status"] not in (OK, NOT_RUN),
                }
            )
        pos = m.end()
    _prose(out, text[pos:])
    return out


def _href(pid: str) -> str:
    """The link to a problem's page: its file name (aimo.tables.file_name, which may hold %)
    quoted once more for the URL."""
    return f"{PAGES}/{urllib.parse.quote(file_name(pid, '.html'))}"


def _prepare(site: dict):
    for p in site["problems"]:
        p["href"] = _href(p["id"])
        for t in p["traces"]:
            t["segments"] = segments(t["text"], t["code_blocks"])


def _write_pages(env, template, out_dir: Path, pages: dict):
    """Write {problem id: context} as the problem pages under out_dir/PAGES, removing pages of
    problems no longer there."""
    folder = out_dir / PAGES
    names = set()
    for pid, context in pages.items():
        name = file_name(pid, ".html")
        names.add(name)
        write_text(
            env.get_template(template).render(csp_script=_NO_SCRIPT, **context), folder / name
        )
    if folder.is_dir():
        for old in folder.glob("*.html"):
            if old.name not in names:
                old.unlink()


def write_site(site: dict, out_dir) -> Path:
    """Write the site of one gathered run into `out_dir`; returns its index.html."""
    out_dir, env = Path(out_dir), _env()
    _prepare(site)
    _write_pages(
        env, "problem.html", out_dir, {p["id"]: {"p": p, "run": site} for p in site["problems"]}
    )
    index = out_dir / "index.html"
    write_text(
        env.get_template("index.html").render(run=site, script=SCRIPT, csp_script=_SCRIPT_HASH),
        index,
    )
    return index


def compare_rows(a: dict, b: dict) -> dict:
    """The problems with a known answer in both runs, by outcome: {"a_only": right in `a`
    and wrong in `b`, "b_only": the reverse, "both_right", "both_wrong"} (lists of rows with
    id, answer, each run's problem view and the link)."""
    theirs = {p["id"]: p for p in b["problems"]}
    out = {"a_only": [], "b_only": [], "both_right": [], "both_wrong": []}
    for pa in a["problems"]:
        pb = theirs.get(pa["id"])
        if pb is None or pa["right"] is None or pb["right"] is None:
            continue
        row = {"id": pa["id"], "answer": pa["answer"], "a": pa, "b": pb, "href": _href(pa["id"])}
        key = {(True, False): "a_only", (False, True): "b_only", (True, True): "both_right"}
        out[key.get((pa["right"], pb["right"]), "both_wrong")].append(row)
    return out


def write_compare(a: dict, b: dict, out_dir) -> Path:
    """Write the comparison of two gathered runs into `out_dir`: an index of the problems
    right in one and wrong in the other, and a page per such problem with both runs' traces
    side by side. Returns its index.html."""
    out_dir, env = Path(out_dir), _env()
    _prepare(a)
    _prepare(b)
    rows = compare_rows(a, b)
    differ = rows["a_only"] + rows["b_only"]
    _write_pages(
        env, "compare_problem.html", out_dir, {r["id"]: {"r": r, "a": a, "b": b} for r in differ}
    )
    index = out_dir / "index.html"
    lists = [
        (f"Right in {a['name']}, wrong in {b['name']}", rows["a_only"]),
        (f"Wrong in {a['name']}, right in {b['name']}", rows["b_only"]),
    ]
    counts = {k: len(v) for k, v in rows.items()}
    html = env.get_template("compare_index.html").render(
        a=a, b=b, lists=lists, counts=counts, both=sum(counts.values()), csp_script=_NO_SCRIPT
    )
    write_text(html, index)
    return index
