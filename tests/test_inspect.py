"""The trace inspector (aimo/inspector): each flag on a hand-made row that has it and one that
does not, the statistics, the site and the comparison written from hand-made runs, the pages
of an online run folder, and what a real headless browser (Debian's chromium) renders from
disk: counts, a flag, a code output, and model text that tries to run a script shown as text.
The site of the tiny workflow run is opened the same way in tests/test_pipeline.py."""

import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from aimo.answers import answer_int64, extract_answer
from aimo.executions import executions_from_blocks
from aimo.inspector import Run, build_compare, build_site, locate, stats
from aimo.inspector import flags as fl
from aimo.inspector.pages import segments
from aimo.prompts import FORCE_ANSWER
from aimo.schemas import EXECUTIONS, PROBLEMS, TRACES
from aimo.tables import file_name, write_table
from aimo.vote import VoteSettings

pytestmark = pytest.mark.needs("unit")  # the browser test needs chromium too (.ci/run)
ROOT = Path(__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script></div><script>document.title='pwned'</script>"


def trace(pid, sample, text, source="generate", **cols):
    """A TRACES row as the TIR loop writes it; the answer extracted from `text`."""
    answer = extract_answer(text)
    row = dict.fromkeys(TRACES.names)
    row.update(
        trace_id=f"{pid}:{sample}",
        problem_id=pid,
        sample=sample,
        seed=sample,
        source=source,
        attempt=0,
        prompt="Solve it.",
        text=text,
        prompt_tokens=10,
        completion_tokens=20,
        code_blocks=[],
        n_code_calls=0,
        n_code_errors=0,
        n_code_timeouts=0,
        exec_s=0.0,
        finish_reason="stop",
        answer=answer,
        answer_int=answer_int64(answer),
        round_tokens=[20],
    )
    row.update(cols)
    return row


def block(code, output, status="ok", wall_s=0.25):
    return {"code": code, "output": output, "status": status, "wall_s": wall_s}


def code_text(code, output, after):
    return f"Let me compute.\n```python\n{code}\n```\n```output\n{output}\n```\n{after}"


def hand_made_rows(p1_answer=42, q_answer=6):
    """Problems and traces with every flag: p1 (answer 42: right, an escaped script, a
    truncated trace with the answer unboxed, a code timeout repaired by reflexion, a cancelled
    trace), p2 (answer 7: a tie broken by the smaller answer, a minority pick, an answer out of
    range), p3 (unknown answer, a forced one) and an id that is no file name."""
    problems = [
        {"problem_id": "p1", "problem": "What is 6 times 7?", "answer": 42},
        {"problem_id": "p2", "problem": "What is 3 + 4?", "answer": 7},
        {"problem_id": "p3", "problem": "Say a number.", "answer": None},
        {"problem_id": "q/1 <b>", "problem": "What is 2 + 3?", "answer": 5},
    ]
    slow = "while True: pass"
    traces = [
        trace(
            "p1",
            0,
            code_text("print(6 * 7)", "42", f"So \\boxed{{{p1_answer}}}."),
            code_blocks=[block("print(6 * 7)", "42")],
            n_code_calls=1,
            round_tokens=[12, 8],
        ),
        trace("p1", 1, f"Some text {EVIL} and we get 42 and", finish_reason="length"),
        trace(
            "p1",
            2,
            code_text(slow, "TimeoutError: the block ran past 5 s", "Guess \\boxed{41}."),
            code_blocks=[block(slow, "TimeoutError: the block ran past 5 s", "timeout", 5.0)],
            n_code_calls=1,
            n_code_errors=1,
            n_code_timeouts=1,
        ),
        trace("p1", 3, f"\\boxed{{{p1_answer}}}", finish_reason="deadline"),
        trace(
            "p1",
            2,
            f"Fixed: \\boxed{{{p1_answer}}}",
            source="reflexion",
            trace_id="p1:2:r1",
            parent_id="p1:2",
            attempt=1,
        ),
        trace("p2", 0, "\\boxed{-3}"),
        trace("p2", 1, "\\boxed{9}"),
        trace("p2", 2, "\\boxed{7}"),
        trace("p2", 3, "I do not know."),
        trace("p3", 0, "Thinking" + FORCE_ANSWER + "12}", finish_reason="deadline"),
        trace("q/1 <b>", 0, f"\\boxed{{{q_answer}}}"),
    ]
    return problems, traces


def write_results(folder: Path, problems, traces) -> Path:
    """The rows as a workflow results folder (problems, generate and reflexion shards, their
    executions)."""
    write_table(problems, folder / "problems.parquet", PROBLEMS)
    for stage in ("generate", "reflexion"):
        rows = [t for t in traces if t["source"] == stage]
        write_table(rows, folder / stage / "shard-0.parquet", TRACES)
        execs = executions_from_blocks(rows)
        write_table(execs, folder / "execute" / stage / "shard-0.parquet", EXECUTIONS)
    return folder


@pytest.fixture
def results(tmp_path):
    return write_results(tmp_path / "results", *hand_made_rows())


@pytest.fixture
def site(results, tmp_path):
    build_site(locate(results, settings={"strategy": "majority"}), tmp_path / "inspect")
    return tmp_path / "inspect"


# -- flags -------------------------------------------------------------------------------------

# per flag: (the arguments of a row that has it, of one that does not)
EX_OK = {"exec_status": "ok"}
CASES = {
    "no_answer": ((trace("p", 0, "no idea"), None, 5), (trace("p", 0, "\\boxed{5}"), None, 5)),
    "unextracted": (
        (trace("p", 0, "... so it is 5 and", finish_reason="length"), None, 5),
        (trace("p", 0, "... so it is 15 and", finish_reason="length"), None, 5),
    ),
    "truncated": (
        (trace("p", 0, "cut", finish_reason="length"), None, None),
        (trace("p", 0, "done", finish_reason="stop"), None, None),
    ),
    "code_failed": (
        (trace("p", 0, "x", code_blocks=[block("1/0", "ZeroDivisionError", "error")]), None, 1),
        (trace("p", 0, "x", code_blocks=[block("1", "1")]), EX_OK, 1),
    ),
    "out_of_range": (
        (trace("p", 0, "\\boxed{123456}"), None, None),
        (trace("p", 0, "\\boxed{12345}"), None, None),
    ),
    "forced": (
        (trace("p", 0, "hm" + FORCE_ANSWER + "3}"), None, None),
        (trace("p", 0, "\\boxed{3}"), None, None),
    ),
    "cancelled": (
        (trace("p", 0, "x", finish_reason="pruned"), None, None),
        (trace("p", 0, "x", finish_reason="max_rounds"), None, None),
    ),
    "minority_pick": ((7, [7, 9, 11, None]), (7, [7, 7, 9, None])),
}


def test_every_flag_has_a_case():
    assert set(CASES) == {f.name for f in fl.FLAGS}
    assert len(fl.BY_NAME) == len(fl.FLAGS)  # each defined once


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_flag_is_raised_by_the_row_that_has_it_and_only_that(name):
    has, has_not = CASES[name]
    flag = fl.BY_NAME[name]
    assert flag.test(*has), name
    assert flag.test(*has_not) is None, name


def test_flag_details_say_what_was_found():
    t = trace("p", 0, "x", code_blocks=[block("a", "b", "timeout"), block("c", "d", "memory")])
    detail = fl.BY_NAME["code_failed"].test(t, {"exec_status": "timeout"}, None)
    assert detail == "block 1: timeout; block 2: memory; re-run: timeout"
    assert "not an integer" in fl.BY_NAME["out_of_range"].test(
        trace("p", 0, "\\boxed{1/2}"), None, 3
    )
    assert set(fl.TRUNCATED) <= {"length", "prompt_too_long"}  # schemas.FINISHED's words
    # the unboxed answer is found as a number, not inside another one
    assert fl.BY_NAME["unextracted"].test(trace("p", 0, "we get 4.5 and 45"), None, 5) is None
    # a cancelled trace is not also truncated; an answer the trace gave is not missing
    flags = fl.trace_flags(trace("p", 0, "\\boxed{3}", finish_reason="early_stop"), None, 3)
    assert set(flags) == {"cancelled"}


# -- statistics --------------------------------------------------------------------------------


def test_pass_at_1_is_the_mean_share_with_its_standard_error():
    out = stats.pass_at_1([(4, 4), (4, 0), (4, 2), (0, 0)])  # a problem with no sample: out
    assert out["value"] == pytest.approx(0.5) and out["problems"] == 3 and out["samples"] == 12
    assert out["se"] == pytest.approx(0.5 / 3**0.5)  # sd of (1, 0, 0.5) is 0.5
    assert stats.pass_at_1([(2, 1)])["se"] is None and stats.pass_at_1([])["value"] is None


def test_ties_count_how_rank_sql_broke_them():
    def vote(answer, score, votes, runner_up=None, runner_score=None, runner_votes=None):
        return {
            "answer": answer,
            "score": score,
            "votes": votes,
            "runner_up": runner_up,
            "runner_up_score": runner_score,
            "runner_up_votes": runner_votes,
        }

    rows = [
        vote(7, 2.0, 1, 9, 2.0, 1),  # equal scores, equal votes: the smaller answer
        vote(3, 2.0, 2, 1, 2.0, 1),  # equal scores: more votes
        vote(1, 3.0, 3, 2, 2.0, 2),  # no tie
        vote(None, 0.0, 0),  # nothing to vote
    ]
    assert [stats.tie(r)["broken_by"] for r in rows] == ["smaller answer", "more votes", None, None]
    assert stats.tie_counts(rows) == {
        "problems": 4,
        "voted": 3,
        "no_vote": 1,
        "ties": 2,
        "more votes": 1,
        "smaller answer": 1,
    }


# -- the site ----------------------------------------------------------------------------------


def test_segments_pair_each_output_with_its_block():
    text = code_text(
        "print(1)", "1", "then\n```python\nx\n```\n```output\nboom\n```\nso \\boxed{1}"
    )
    segs = segments(text, [block("print(1)", "1"), block("x", "boom", "error", 0.5)])
    assert [s["kind"] for s in segs] == [
        "prose",
        "code",
        "output",
        "prose",
        "code",
        "output",
        "prose",
    ]
    assert (segs[2]["status"], segs[2]["failed"]) == ("ok", False)
    assert (segs[5]["text"], segs[5]["status"], segs[5]["wall_s"], segs[5]["failed"]) == (
        "boom",
        "error",
        0.5,
        True,
    )
    assert segs[-1]["parts"] == [(False, "so "), (True, "\\boxed{1}")]


@pytest.mark.parametrize(
    "text",
    [
        # tools: a hermes call and the template's tool turn (special tokens dropped)
        'Let me compute.\n<tool_call>\n{"name": "python", "arguments": {"code": "print(6 * 7)"}}'
        "\n</tool_call>\nuser\n<tool_response>\n42\n</tool_response>\nassistant\nSo \\boxed{42}",
        # harmony: a message to=python and python's reply, the answer in the final channel
        "<|channel|>analysis<|message|>Let me compute.<|end|><|start|>assistant<|channel|>analysis"
        " to=python code<|message|>print(6 * 7)<|call|><|start|>python to=assistant<|channel|>"
        "analysis<|message|>42<|end|><|start|>assistant<|channel|>final<|message|>So \\boxed{42}",
    ],
)
def test_segments_show_the_calls_of_every_dialect(text):
    segs = segments(text, [block("print(6 * 7)", "42")])
    between = ["prose"] if "<tool_call>" in text else []  # the template's "user" line
    assert [s["kind"] for s in segs] == ["prose", "code", *between, "output", "prose"]
    code, output = (s for s in segs if s["kind"] in ("code", "output"))
    assert (code["text"], output["text"], output["status"]) == ("print(6 * 7)", "42", "ok")
    assert segs[-1]["parts"][-1] == (True, "\\boxed{42}")


def page(site, pid) -> str:
    return (site / "problems" / file_name(pid, ".html")).read_text()


def test_the_site_has_an_index_and_a_page_per_problem(site):
    assert sorted(p.name for p in (site / "problems").iterdir()) == sorted(
        file_name(p, ".html") for p in ("p1", "p2", "p3", "q/1 <b>")
    )
    index = (site / "index.html").read_text()
    # every link names its page's file, quoted for the URL (file_name's % included)
    links = re.findall(r'href="(problems/[^"]+)"', index)
    assert len(links) == 4 and all((site / urllib.parse.unquote(h)).is_file() for h in links)
    assert "q/1 &lt;b&gt;" in index and "q/1 <b>" not in index
    assert "http://" not in index and "https://" not in index and "src=" not in index
    p1 = page(site, "p1")
    assert "TimeoutError: the block ran past 5 s" in p1 and "output: timeout, 5 s" in p1
    assert '<a href="#t3">p1:2</a>' in p1  # the reflexion row links to the trace it repairs


def test_model_text_is_escaped(site):
    p1 = page(site, "p1")
    assert EVIL not in p1 and "alert(1)" in p1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;/div&gt;" in p1
    assert "<script" not in p1  # a problem page has no script at all
    assert "script-src 'none'" in p1


def test_the_index_counts_flags_ties_and_pass_at_1(site):
    index = (site / "index.html").read_text()
    # p2: 7 and 9 tie (one vote each under majority), the smaller answer wins, held by 1 of 4
    p2 = page(site, "p2")
    assert "tie, broken by smaller answer" in p2 and "1 of the 4 traces that vote give 7" in p2
    row = re.search(r'<tr data-right="1" data-sources="generate"\s+data-flags="([^"]*)">', index)
    assert (
        row and "problem:minority_pick" in row.group(1) and "generate:out_of_range" in row.group(1)
    )
    assert "generate:truncated generate:unextracted" in index  # p1's cut trace
    assert "generate:forced" in index and "generate:cancelled" in index
    # pass@1 over the known problems' generate samples that can vote (no cancelled one):
    # p1 1/3, p2 1/4, q/1 0/1 -> mean 0.194
    assert "19.4%" in index
    assert "no-answer rate" in index and "2 of 11 traces give no answer" in index


def test_compare_lists_the_problems_right_in_one_run_only(tmp_path, results):
    other = write_results(tmp_path / "other", *hand_made_rows(p1_answer=41, q_answer=5))
    majority = {"strategy": "majority"}
    a, b = locate(results, settings=majority), locate(other, settings=majority)
    index = build_compare(a, b, tmp_path / "compare")
    html = index.read_text()
    one, two = html.split("<h2>Wrong in")
    assert "p1" in one and "q/1" not in one and "q/1 &lt;b&gt;" in two and "p1" not in two
    pages = sorted(p.name for p in (tmp_path / "compare" / "problems").iterdir())
    assert pages == sorted(file_name(p, ".html") for p in ("p1", "q/1 <b>"))
    both = (tmp_path / "compare/problems/p1.html").read_text()
    assert 'id="a-t1"' in both and 'id="b-t1"' in both  # both runs' traces, apart


def test_an_online_run_folder_gets_the_same_pages_and_compares(tmp_path, results):
    """main.py --evaluate RUN_DIR writes the site of the run (evaluate_run), and --compare
    OTHER its comparison with another run, here a workflow results folder."""
    import sys

    from aimo import config as aimo_config

    sys.path.insert(0, str(ROOT))  # main.py sits at the top
    import main

    problems, traces = hand_made_rows(p1_answer=41)
    run = tmp_path / "run"
    write_table(problems, run / "problems.parquet", PROBLEMS)
    for p in problems:
        rows = [t for t in traces if t["problem_id"] == p["problem_id"]]
        write_table(rows, run / "traces" / file_name(p["problem_id"], ".parquet"), TRACES)
        write_table(
            executions_from_blocks(rows),
            run / "executions" / file_name(p["problem_id"], ".parquet"),
            EXECUTIONS,
        )
    args = ["--evaluate", str(run), "--compare", str(results)]
    assert main.main([*args, "--configfile", str(ROOT / "config.yaml")]) == 0
    site = run / "evaluate" / "inspect"
    assert len(list((site / "problems").iterdir())) == 4
    assert "TimeoutError" in page(site, "p1")
    compared = (run / "evaluate" / "compare" / "index.html").read_text()
    assert f"Wrong in {run}, right in {results} (1)" in compared  # p1
    # the folder is an online run for the command line too, with the settings it was voted with
    config = aimo_config.load([ROOT / "config.yaml"])
    assert locate(run).settings == VoteSettings.of(aimo_config.online_config(config)["vote"])


def test_a_run_needs_its_files(tmp_path):
    with pytest.raises(ValueError, match="no problems.parquet"):
        locate(tmp_path)
    write_table([], tmp_path / "problems.parquet", PROBLEMS)
    with pytest.raises(ValueError, match="no trace shards"):
        locate(tmp_path)
    assert isinstance(Run("x", "p", [], []).settings, VoteSettings)


# -- a real browser ----------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(tmp_path: Path, *args: str) -> str:
    """Run Debian's chromium headless with its own profile under `tmp_path`; its stdout. A
    missing chromium skips (the CI installs it: .ci/run); one that fails fails the test."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    profile = tmp_path / "chromium-profile"
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-3000:]}"
    return proc.stdout


def rendered(tmp_path: Path, page_path: Path) -> str:
    """The DOM chromium builds from `page_path` (opened from disk), scripts run."""
    return chromium(tmp_path, "--virtual-time-budget=3000", "--dump-dom", page_path.as_uri())


def screenshot(tmp_path: Path, page_path: Path, name: str) -> Path:
    """A screenshot of `page_path`, kept under the test's tmp folder."""
    out = tmp_path / "artifacts" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    chromium(tmp_path, f"--screenshot={out}", "--window-size=1280,1600", page_path.as_uri())
    assert out.stat().st_size > 10_000, out  # a page, not a blank
    return out


def check_site_in_browser(site: Path, tmp_path: Path, n_problems: int) -> dict:
    """Open the index and every problem page of `site` in chromium and check what it renders:
    the problem count, that the index's script ran (it filled the shown count and marked the
    table sortable) and that no page ran another. Returns the DOM by page."""
    index = rendered(tmp_path, site / "index.html")
    assert f'<span id="shown">{n_problems}</span> of {n_problems} problems shown' in index
    assert 'data-sortable="yes"' in index  # the sort/filter script ran, allowed by its hash
    assert len(re.findall(r"<tr data-right=", index)) == n_problems
    doms = {"index": index}
    for p in sorted((site / "problems").iterdir()):
        dom = rendered(tmp_path, p)
        title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
        assert title.endswith(": aimo inspector"), title  # no script changed it
        assert "<script" not in dom
        doms[p.name] = dom
    screenshot(tmp_path, site / "index.html", "index.png")
    return doms


def test_a_browser_renders_the_site_and_runs_no_model_text(site, tmp_path):
    doms = check_site_in_browser(site, tmp_path, n_problems=4)
    assert '<span class="flag problem">minority pick</span>' in doms["index"]
    p1 = doms["p1.html"]
    # the script and the closing tag in the trace are text; the cards after it stay whole
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;/div&gt;" in p1
    assert len(re.findall(r'<section class="card" id="t\d+">', p1)) == 5
    assert '<pre class="output">42</pre>' in p1  # a code output, as the model got it
    assert '<pre class="output failed">TimeoutError: the block ran past 5 s</pre>' in p1
    assert '<span class="flag trace" title="stopped at the token budget' in p1
    shot = screenshot(tmp_path, site / "problems" / "p1.html", "p1.png")
    assert shot.is_file()
