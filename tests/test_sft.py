"""The SFT stages: NuminaMath-TIR data prep, LoRA training, the merged model in vLLM, wiring."""

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import overrides, planned_jobs, snakemake

from aimo import prompts, sft, sft_data, tir
from aimo.tables import read_metadata, read_table

pytestmark = pytest.mark.needs("engine")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "numina_tir_sample.jsonl"


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def good_row(problem, code, output, answer):
    solution = (
        f"We compute it.\n```python\n{code}\n```\n```output\n{output}\n```\n"
        f"So the answer is $\\boxed{{{answer}}}$."
    )
    return {
        "problem": problem,
        "solution": solution,
        "messages": [
            {"content": problem, "role": "user"},
            {"content": solution, "role": "assistant"},
        ],
    }


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- data prep -------------------------------------------------------------------------------


@pytest.mark.needs("unit")
def test_sample_is_clean_and_its_outputs_are_real(tmp_path):
    """The shipped sample loses no row, and every ```output block is what its code prints."""
    meta = sft_data.prepare(SAMPLE, tmp_path / "data.parquet", val_fraction=0.1, seed=1)
    assert meta["dropped"] == {} and meta["rows_kept"] == meta["rows_read"] >= 30
    assert meta["validation"] >= 1
    rows = read_table(tmp_path / "data.parquet", sft_data.SFT_DATA).to_pylist()
    for row in rows:
        text, printed = row["solution"], None
        n_blocks = row["n_code_blocks"]
        assert text.count(prompts.CODE_FENCE) == text.count(prompts.OUTPUT_FENCE) == n_blocks >= 1
        for piece in text.split(prompts.CODE_FENCE + "\n")[1:]:
            code, rest = piece.split("\n" + prompts.FENCE_END + "\n", 1)
            assert rest.startswith(prompts.OUTPUT_FENCE + "\n")
            printed = rest[len(prompts.OUTPUT_FENCE) + 1 :].split("\n" + prompts.FENCE_END, 1)[0]
            done = subprocess.run(
                [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, code
            assert done.stdout.rstrip() == printed, (row["problem"], code)
        # The boxed answer is the last line the last block printed.
        assert row["answer_int"] == int(printed.splitlines()[-1])


@pytest.mark.needs("unit")
def test_prepare_normalises_like_inference(tmp_path):
    """Messages are tir_messages + the solution; code and output are fenced as tir.run writes
    them, whatever spacing the export used."""
    row = good_row("What is 6 times 7?", "print(6 * 7)", "42", 42)
    row["solution"] = row["solution"].replace("```\n```output", "```\n\n```output  ")
    row["solution"] = row["solution"].replace("print(6 * 7)\n", "print(6 * 7)\n\n")
    meta = sft_data.prepare(write_jsonl(tmp_path / "in.jsonl", [row]), tmp_path / "o.parquet")
    assert meta["dropped"] == {}
    out = read_table(tmp_path / "o.parquet", sft_data.SFT_DATA).to_pylist()[0]
    assert out["messages"][:2] == prompts.tir_messages("What is 6 times 7?")
    assert out["messages"][2] == {"role": "assistant", "content": out["solution"]}
    expected = (
        "We compute it.\n```python\nprint(6 * 7)\n```\n"
        + prompts.output_block("42")
        + "So the answer is $\\boxed{42}$."
    )
    assert out["solution"] == expected
    assert tir.last_code_block(out["solution"]) == "print(6 * 7)"
    assert (out["split"], out["answer"], out["answer_int"]) == ("train", "42", 42)


@pytest.mark.needs("unit")
def test_real_numina_row_keeps_its_text(tmp_path):
    """The one real NuminaMath-TIR row already uses the inference fences: nothing changes."""
    real = ROOT.parent / "shared" / "data" / "numina_tir_sample.jsonl"
    if not real.is_file():
        pytest.skip(f"{real} is not here")
    row = json.loads(real.read_text().splitlines()[0])
    text, n_code, reason = sft_data.normalise_solution(row["solution"])
    assert (reason, n_code, text) == (None, 1, row["solution"].strip())


@pytest.mark.needs("unit")
def test_bad_rows_are_counted_not_fatal(tmp_path, caplog):
    good = [
        good_row(f"What is {a} plus {a}?", f"print({a} + {a})", str(2 * a), 2 * a)
        for a in range(1, 6)
    ]
    no_output = good_row("What is 9 minus 2?", "print(9 - 2)", "7", 7)
    no_output["solution"] = no_output["solution"].replace("```output\n7\n```\n", "")
    no_box = good_row("What is 3 cubed?", "print(3 ** 3)", "27", 27)
    no_box["solution"] = no_box["solution"].replace("$\\boxed{27}$", "27")
    stray_output = {"problem": "What is 1 + 1?", "solution": "```output\n2\n```\nSo $\\boxed{2}$."}
    unclosed = {"problem": "What is 2 + 2?", "solution": "```python\nprint(2 + 2)\n"}
    fraction = good_row("What is 1 over 2?", "print(1 / 2)", "0.5", "\\frac{1}{2}")
    duplicate = dict(good[0], problem="  what is 1 PLUS 1? ")
    rows = good + [
        no_output,
        no_box,
        stray_output,
        unclosed,
        fraction,
        duplicate,
        {"problem": "", "solution": "x"},
        {"problem": "Why?"},
        "{not json",
        "[1, 2]",
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with caplog.at_level("WARNING", logger="aimo.sft_data"):
        meta = sft_data.prepare(
            path, tmp_path / "o.parquet", val_fraction=0.2, seed=3, integer_answers=True
        )
    assert meta["dropped"] == {
        "code_without_output": 1,
        "no_boxed_answer": 1,
        "output_without_code": 1,
        "unclosed_fence": 1,
        "non_integer_answer": 1,
        "duplicate_problem": 1,
        "missing_problem": 1,
        "missing_solution": 1,
        "unreadable": 2,
    }
    assert read_metadata(tmp_path / "o.parquet")["dropped"] == meta["dropped"]
    assert (meta["rows_read"], meta["rows_kept"]) == (len(rows), 5)
    assert (meta["train"], meta["validation"]) == (4, 1)
    assert "code_without_output" in caplog.text and "duplicate_problem" in caplog.text
    # Without the integer filter the fraction row stays.
    meta = sft_data.prepare(path, tmp_path / "o2.parquet")
    assert "non_integer_answer" not in meta["dropped"] and meta["rows_kept"] == 6


@pytest.mark.needs("unit")
def test_split_is_seeded(tmp_path):
    a = sft_data.split_of(40, 0.25, seed=7)
    assert a == sft_data.split_of(40, 0.25, seed=7) != sft_data.split_of(40, 0.25, seed=8)
    assert a.count("validation") == 10
    assert sft_data.split_of(5, 0.0, 1) == ["train"] * 5
    assert sft_data.split_of(3, 0.01, 1).count("validation") == 1


@pytest.mark.needs("unit")
def test_parquet_export_reads_like_jsonl(tmp_path):
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:6]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    sft_data.prepare(tmp_path / "in.parquet", tmp_path / "a.parquet", seed=5)
    write_jsonl(tmp_path / "in.jsonl", rows)
    sft_data.prepare(tmp_path / "in.jsonl", tmp_path / "b.parquet", seed=5)
    a, b = (
        read_table(tmp_path / f, sft_data.SFT_DATA).to_pylist() for f in ("a.parquet", "b.parquet")
    )
    assert a == b and len(a) == 6


@pytest.mark.needs("unit")
def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sft\.data=.*nope\.jsonl.*no such file"):
        sft_data.prepare(tmp_path / "nope.jsonl", tmp_path / "o.parquet")
    with pytest.raises(sft_data.ConfigError, match=r"sft\.data=.*\.parquet or \.jsonl"):
        sft_data.prepare(write_jsonl(tmp_path / "x.csv", []), tmp_path / "o.parquet")
    with pytest.raises(SystemExit), sft_data.clean_errors():
        sft_data.prepare(tmp_path / "nope.jsonl", tmp_path / "o.parquet")


# --- chat template and loss mask -------------------------------------------------------------


def test_training_text_round_trips_through_the_chat_template(tmp_path, tokenizer):
    sft_data.prepare(SAMPLE, tmp_path / "data.parquet", seed=2)
    row = read_table(tmp_path / "data.parquet", sft_data.SFT_DATA).to_pylist()[0]
    # The prompt is the exact string the TIR loop sends for this problem.
    inference_prompt = tokenizer.apply_chat_template(
        prompts.tir_messages(row["problem"]), add_generation_prompt=True, tokenize=False
    )
    full = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    assert full.startswith(inference_prompt)
    assert full[len(inference_prompt) :].startswith(row["solution"])
    enc = sft.encode(tokenizer, row["messages"])
    assert tokenizer.decode(enc["input_ids"]) == full
    n_prompt = len(tokenizer(inference_prompt, add_special_tokens=False)["input_ids"])
    assert set(enc["labels"][:n_prompt]) == {-100}
    trained = tokenizer.decode(
        [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100]
    )
    # The model learns its own words and the ```output fence, not what the sandbox prints.
    completion, kept, at = full[len(inference_prompt) :], [], 0
    for begin, end in sft.output_spans(completion):
        kept.append(completion[at:begin])
        at = end
    assert trained == "".join(kept) + completion[at:]
    assert trained.count(prompts.OUTPUT_FENCE) == row["n_code_blocks"] and "\\boxed{" in trained
    unmasked = sft.encode(tokenizer, row["messages"], mask_outputs=False)
    assert (
        tokenizer.decode(
            [t for t, lab in zip(unmasked["input_ids"], unmasked["labels"]) if lab != -100]
        )
        == completion
    )


@pytest.mark.needs("unit")
def test_unsloth_without_gpu_names_the_key():
    with pytest.raises(sft.ConfigError, match=r"sft\.trainer=unsloth"):
        sft.resolve_trainer("unsloth")
    assert sft.resolve_trainer("auto") == "trl"
    with pytest.raises(sft.ConfigError, match=r"sft\.trainer"):
        sft.resolve_trainer("deepspeed")


# --- training, resume, merge, vLLM -----------------------------------------------------------

PARAMS = {
    "enabled": True,
    "data": "unused",
    "trainer": "auto",
    "val_fraction": 0.0,
    "seed": 11,
    "integer_answers": False,
    "mask_outputs": True,
    "max_seq_len": 512,
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    "learning_rate": 3e-3,
    "lr_scheduler": "constant",
    "warmup_steps": 0,
    "max_steps": 6,
    "batch_size": 2,
    "grad_accum": 1,
    "save_steps": 3,
    "eval_steps": 0,
    "gradient_checkpointing": False,
}


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """Six steps on one repeated batch of two short rows, then the same run resumed from its
    step-3 checkpoint."""
    work = tmp_path_factory.mktemp("sft")
    rows = [
        good_row("What is 6 times 7?", "print(6 * 7)", "42", 42),
        good_row("What is 2 to the 10th power?", "print(2 ** 10)", "1024", 1024),
    ]
    sft_data.prepare(write_jsonl(work / "in.jsonl", rows), work / "data.parquet", val_fraction=0)
    out = {k: work / k for k in ("adapter", "merged", "checkpoints")}
    args = (
        work / "data.parquet",
        tiny_model,
        out["adapter"],
        out["merged"],
        work / "log.csv",
        work / "loss.png",
        out["checkpoints"],
        PARAMS,
    )
    first = sft.train(*args, dtype="bfloat16", threads=2)
    history = list(csv.DictReader(open(work / "log.csv")))
    # A job killed after step 3 while saving step 6: checkpoint-6 has no trainer_state.json.
    (out["checkpoints"] / "checkpoint-6" / "trainer_state.json").unlink()
    second = sft.train(*args, dtype="bfloat16", threads=2)
    return {"work": work, "first": first, "second": second, "history": history, **out}


def test_training_lowers_the_loss(trained):
    losses = [float(r["loss"]) for r in trained["history"] if r["split"] == "train"]
    assert [int(r["step"]) for r in trained["history"]] == list(range(1, 7))
    assert losses[-1] < losses[0] * 0.8, losses
    assert trained["first"]["steps"] == 6 and trained["first"]["peak_rss_mb"] > 0
    assert (trained["work"] / "loss.png").stat().st_size > 1000


def test_restart_resumes_from_the_last_checkpoint(trained):
    second = trained["second"]
    assert (second["steps"], second["steps_this_run"]) == (6, 3)
    history = list(csv.DictReader(open(trained["work"] / "log.csv")))
    assert [int(r["step"]) for r in history] == list(range(1, 7))
    # Same data order, same seeds: the resumed steps repeat the first run's losses.
    for a, b in zip(history, trained["history"]):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-3)


def test_checkpoints_of_another_configuration_are_not_resumed(trained, tmp_path, tiny_model):
    stamp = json.loads((trained["checkpoints"] / sft.FINGERPRINT).read_text())
    assert stamp["sft"]["max_steps"] == 6 and "enabled" not in stamp["sft"]
    other = sft._fingerprint(
        trained["work"] / "data.parquet", tiny_model, dict(PARAMS, learning_rate=1e-4), "trl"
    )
    assert other != stamp
    # The same choice on a directory of empty checkpoints: a stamp that differs clears it.
    ck = tmp_path / "ck"
    for step in (2, 4):
        (ck / f"checkpoint-{step}").mkdir(parents=True)
        (ck / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (ck / sft.FINGERPRINT).write_text(json.dumps(stamp))
    assert sft._checkpoints(ck, stamp) == str(ck / "checkpoint-4")
    assert sft._checkpoints(ck, other) is None and not list(ck.glob("checkpoint-*"))


def test_merged_model_names_base_and_adapter(trained, tiny_model):
    source = json.loads((trained["merged"] / "SOURCE.json").read_text())
    assert source["source"] == "sft"
    assert source["adapter_sha256"] == sft.adapter_sha256(trained["adapter"])
    assert source["base"]["name"] == "smollm2-135m-instruct"
    assert source["training"]["steps"] == 6
    for name in ("chat_template.jinja", "tokenizer.json", "config.json", "model.safetensors"):
        assert (trained["merged"] / name).is_file(), name
    assert (trained["merged"] / "chat_template.jinja").read_text() == (
        tiny_model / "chat_template.jinja"
    ).read_text()
    from aimo.solver import model_identity

    identity = model_identity(trained["merged"])
    assert identity["adapter_sha256"] == source["adapter_sha256"] and identity["base"]["sha256"]


VLLM_SCRIPT = textwrap.dedent("""
    import json, sys
    if __name__ == "__main__":
        from aimo import prompts
        from aimo.engines import embedded as engine
        from vllm import SamplingParams
        llm = engine.load(sys.argv[1], dtype="bfloat16", max_model_len=512, seed=0)
        prompt = llm.get_tokenizer().apply_chat_template(
            prompts.tir_messages("What is 6 times 7?"), add_generation_prompt=True, tokenize=False)
        out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)
        print("RESULT " + json.dumps({"text": out[0].outputs[0].text,
                                      "tokens": len(out[0].outputs[0].token_ids)}))
""")


def test_merged_model_generates_in_vllm(trained, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(VLLM_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(trained["merged"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["tokens"] > 0 and result["text"].strip()


# --- wiring ---------------------------------------------------------------------------------


@pytest.mark.needs("workflow")
def test_sft_enabled_by_a_config_overlay_feeds_generate(workflow_copy):
    """`--configfile config.yaml sft.yaml` is the form that works (--config 'sft={...}' would
    pass `true` as a string, which the schema rejects)."""
    jobs = planned_jobs(
        workflow_copy, *overrides(workflow_copy, "sft.yaml", "sft: {enabled: true}\n")
    )
    assert jobs["sft_data"] == 1 and jobs["sft"] == 1 and jobs["generate"] == 1
    assert "sft" not in planned_jobs(workflow_copy)
    proc = snakemake(workflow_copy, "-n", "--config", 'sft={"enabled": true}', check=False)
    assert proc.returncode != 0 and "is not of type 'boolean'" in proc.stdout


@pytest.mark.needs("workflow")
def test_missing_data_stops_the_workflow_naming_the_file(workflow_copy):
    proc = snakemake(
        workflow_copy,
        "-n",
        "results/sft/data.parquet",
        *overrides(
            workflow_copy, "sft.yaml", "sft: {enabled: true, data: data/no-such-export.jsonl}\n"
        ),
        check=False,
    )
    assert proc.returncode != 0
    assert "Missing input files for rule sft_data" in proc.stdout
    assert "no-such-export.jsonl" in proc.stdout
