"""LoRA fine-tuning on the sft_data table, and the merged model directory that vLLM loads.

TRL's SFTTrainer with PEFT on a CPU (or on a GPU without unsloth); unsloth on a GPU. The loss
covers the assistant turn only, and within it not the inside of ```output blocks: at inference
the sandbox writes those, the model only writes the fence that asks for them. Training resumes
from the last checkpoint of the same configuration. The merged model carries a SOURCE.json that
names its base model and a hash of the adapter, so every trace it generates says what made it.

Heavy packages are imported inside functions: unsloth has to be imported before transformers to
patch it, and the data helpers must stay cheap. This module never starts vLLM.
"""

import gc
import hashlib
import importlib.util
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

from aimo import devices, prompts
from aimo.schemas import SFT_DATA
from aimo.sft_data import ConfigError, clean_errors, file_sha256, prompt_sha256
from aimo.tables import atomic_path, make_readable, read_metadata, read_table, write_text

__all__ = [
    "ConfigError",
    "clean_errors",
    "resolve_trainer",
    "encode",
    "train",
    "merge",
    "adapter_sha256",
]

log = logging.getLogger("aimo.sft")

TRAINERS = ("auto", "trl", "unsloth")
FINGERPRINT = "FINGERPRINT.json"
# Base-model files the merged directory copies as they are, so that its tokenizer and chat
# template (the prompt text at inference) are the base model's to the byte.
_WEIGHTS = (".safetensors", ".bin", ".pt", ".gguf")
_REWRITTEN = {"config.json", "SOURCE.json", "model.safetensors.index.json"}


def resolve_trainer(requested: str) -> str:
    """The trainer sft.trainer asks for on this machine: 'trl' or 'unsloth'.

    `auto` takes unsloth on a GPU where it is installed, TRL otherwise. Asking for unsloth
    without a GPU, or without the package, is a ConfigError that says which key to change.
    """
    if requested not in TRAINERS:
        raise ConfigError(f"sft.trainer={requested!r}: expected one of {list(TRAINERS)}")
    gpu = devices.has_gpu()
    installed = importlib.util.find_spec("unsloth") is not None
    if requested == "unsloth":
        if not gpu:
            raise ConfigError(
                "sft.trainer=unsloth needs a CUDA GPU and this machine has none; "
                "set sft.trainer to trl (or auto) to train with TRL on the CPU"
            )
        if not installed:
            raise ConfigError(
                "sft.trainer=unsloth but the unsloth package is not installed; "
                "install it (`pip install unsloth`) or set sft.trainer to trl or auto"
            )
    if requested == "auto":
        return "unsloth" if gpu and installed else "trl"
    return requested


def output_spans(text: str, start: int = 0):
    """Character spans, at or after `start`, that the sandbox writes at inference: everything
    after each ```output fence up to and including the newline after its closing fence."""
    spans, fence, close = [], prompts.OUTPUT_FENCE, "\n" + prompts.FENCE_END
    at = text.find(fence, start)
    while at >= 0:
        body = at + len(fence)
        end = text.find(close, body)
        end = len(text) if end < 0 else end + len(close)
        if text.startswith("\n", end):
            end += 1
        spans.append((body, end))
        at = text.find(fence, end)
    return spans


def encode(tokenizer, messages, mask_outputs=True):
    """input_ids and labels of one chat: the model's chat template renders it, and only the
    assistant turn (less the code outputs, with `mask_outputs`) keeps its labels; the others
    are -100. The prompt is the string inference sends, so the two agree token for token."""
    prompt = tokenizer.apply_chat_template(
        messages[:-1], add_generation_prompt=True, tokenize=False
    )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ConfigError(
            "the model's chat template renders a conversation whose start differs "
            "from the prompt it renders for generation; the SFT text would not "
            "match inference (model.name / the chat template)"
        )
    spans = output_spans(full, len(prompt)) if mask_outputs else []
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token, (begin, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        tool = any(a <= begin and end <= b for a, b in spans)
        labels.append(token if begin >= len(prompt) and not tool else -100)
    return {"input_ids": list(enc["input_ids"]), "labels": labels}


def examples(rows, tokenizer, max_seq_len, mask_outputs=True):
    """Encoded rows and how many were dropped for being longer than `max_seq_len` tokens (a cut
    solution would lose its final answer, so long rows are left out rather than truncated)."""
    out, too_long = [], 0
    for row in rows:
        enc = encode(tokenizer, row["messages"], mask_outputs)
        if len(enc["input_ids"]) > max_seq_len:
            too_long += 1
            continue
        out.append(enc)
    return out, too_long


def adapter_sha256(adapter_dir) -> str:
    """A hash over the adapter's weight files (name and bytes), in name order."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(adapter_dir).iterdir() if p.suffix in _WEIGHTS)
    if not files:
        raise FileNotFoundError(f"{adapter_dir}: no adapter weights")
    for path in files:
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def _source(model_dir) -> dict:
    path = Path(model_dir, "SOURCE.json")
    return json.loads(path.read_text()) if path.is_file() else {}


def _fingerprint(data_path, base_dir, params, trainer) -> dict:
    """What a checkpoint must share with this run to be resumed."""
    settings = {k: v for k, v in params.items() if k not in ("enabled", "data")}
    return {
        "data_sha256": file_sha256(data_path),
        "base": _source(base_dir),
        "base_dir": str(Path(base_dir).resolve()),
        "trainer": trainer,
        "sft": settings,
    }


def _checkpoints(checkpoint_dir, fingerprint):
    """The checkpoint to resume from, or None. Checkpoints of another configuration are
    removed, since resuming them would mix two runs, and so is one that a killed job left
    half-written (the trainer writes trainer_state.json last, and not atomically)."""
    checkpoint_dir = Path(checkpoint_dir)
    stamp = checkpoint_dir / FINGERPRINT
    if checkpoint_dir.is_dir():
        old = json.loads(stamp.read_text()) if stamp.is_file() else None
        if old != fingerprint:
            log.info("%s holds checkpoints of another configuration; starting over", checkpoint_dir)
            shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n", stamp)
    found = sorted(
        (int(p.name.split("-")[1]), p)
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[1].isdigit()
    )
    for _, path in reversed(found):
        if (path / "trainer_state.json").is_file():
            return str(path)
        log.warning("%s is incomplete (a job killed while saving it); removing it", path)
        shutil.rmtree(path)
    return None


def _load(kind, base_dir, params, gpu):
    """The model (a PEFT model for unsloth) and tokenizer to train, and the LoraConfig that TRL
    applies (None when the model already carries its adapter)."""
    lora = params["lora"]
    if kind == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(base_dir),
            max_seq_length=params["max_seq_len"],
            dtype=None,
            load_in_4bit=False,
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]),
            bias="none",
            use_gradient_checkpointing="unsloth" if params["gradient_checkpointing"] else False,
            random_state=params["seed"],
        )
        return model, tokenizer, None
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # bf16 where the GPU has it; fp32 on a CPU, where bf16 matmuls are slow without AVX512-BF16.
    dtype = torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return model, tokenizer, config


def _step_logger():
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """Each logged step into the aimo log (file and terminal) instead of print()."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                log.info(
                    "step %d/%d: loss %.4f, lr %.3g",
                    state.global_step,
                    state.max_steps,
                    logs["loss"],
                    logs.get("learning_rate", float("nan")),
                )
            elif "eval_loss" in logs:
                log.info("step %d: validation loss %.4f", state.global_step, logs["eval_loss"])

    return StepLog()


def history_rows(log_history):
    """The trainer's log history as rows: step, epoch, split (train | validation), loss,
    learning_rate, grad_norm."""
    rows = []
    for entry in log_history:
        for split, key in (("train", "loss"), ("validation", "eval_loss")):
            if key in entry:
                rows.append(
                    {
                        "step": entry.get("step"),
                        "epoch": entry.get("epoch"),
                        "split": split,
                        "loss": entry[key],
                        "learning_rate": entry.get("learning_rate"),
                        "grad_norm": entry.get("grad_norm"),
                    }
                )
    return rows


def write_history(rows, csv_path, png_path):
    """The loss log as CSV and as a plot (train per step, validation where evaluated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["step", "epoch", "split", "loss", "learning_rate", "grad_norm"]
    lines = [",".join(cols)] + [
        ",".join("" if r[c] is None else str(r[c]) for c in cols) for r in rows
    ]
    write_text("\n".join(lines) + "\n", csv_path)
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, style in (("train", "-"), ("validation", "o--")):
        points = [(r["step"], r["loss"]) for r in rows if r["split"] == split]
        if points:
            ax.plot(*zip(*points), style, label=split)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title("LoRA fine-tuning")
    ax.legend()
    fig.tight_layout()
    tmp = atomic_path(png_path)
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, png_path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def _trainer_version(kind):
    dist = "unsloth" if kind == "unsloth" else "trl"
    return f"{dist} {metadata.version(dist)}, peft {metadata.version('peft')}"


def train(
    data_path,
    base_dir,
    adapter_dir,
    merged_dir,
    train_log,
    loss_plot,
    checkpoint_dir,
    params: dict,
    dtype="bfloat16",
    threads=2,
) -> dict:
    """Fine-tune the model in `base_dir` on the sft_data table at `data_path`; write the adapter,
    the merged model, the loss log (CSV) and its plot. `params` is the config's sft section,
    `dtype` the model.dtype the merged weights are saved in. Returns the training summary."""
    kind = resolve_trainer(params["trainer"])
    if kind == "unsloth":
        import unsloth  # noqa: F401  (first, so it can patch transformers and trl)
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    gpu = devices.has_gpu()
    if not gpu:
        torch.set_num_threads(max(1, threads))
    meta = read_metadata(data_path)
    if meta.get("prompt_sha256") != prompt_sha256():
        raise ConfigError(
            f"{data_path} was built with other prompts than aimo.prompts now holds; "
            "rebuild it (snakemake --forcerun sft_data) so training matches inference"
        )
    rows = read_table(data_path, SFT_DATA).to_pylist()
    set_seed(params["seed"])
    model, tokenizer, lora = _load(kind, base_dir, params, gpu)
    splits = {}
    for split in ("train", "validation"):
        encoded, too_long = examples(
            [r for r in rows if r["split"] == split],
            tokenizer,
            params["max_seq_len"],
            params["mask_outputs"],
        )
        if too_long:
            log.warning(
                "%s: dropped %d row(s) longer than sft.max_seq_len=%d tokens",
                split,
                too_long,
                params["max_seq_len"],
            )
        splits[split] = Dataset.from_list(encoded) if encoded else None
    if splits["train"] is None:
        raise ConfigError(
            f"{data_path}: no training row fits in sft.max_seq_len={params['max_seq_len']} tokens"
        )
    n_train = len(splits["train"])
    log.info(
        "%s trainer on %s: %d train and %d validation rows, %d steps of %d x %d rows",
        kind,
        "GPU" if gpu else "CPU",
        n_train,
        len(splits["validation"]) if splits["validation"] else 0,
        params["max_steps"],
        params["batch_size"],
        params["grad_accum"],
    )

    resume = _checkpoints(checkpoint_dir, _fingerprint(data_path, base_dir, params, kind))
    evaluate = splits["validation"] is not None and params["eval_steps"] > 0
    args = SFTConfig(
        output_dir=str(checkpoint_dir),
        max_steps=params["max_steps"],
        per_device_train_batch_size=params["batch_size"],
        per_device_eval_batch_size=params["batch_size"],
        gradient_accumulation_steps=params["grad_accum"],
        learning_rate=params["learning_rate"],
        lr_scheduler_type=params["lr_scheduler"],
        warmup_steps=params["warmup_steps"],
        logging_steps=1,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=params["save_steps"],
        save_total_limit=2,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=params["eval_steps"] or None,
        seed=params["seed"],
        data_seed=params["seed"],
        report_to="none",
        disable_tqdm=True,
        gradient_checkpointing=params["gradient_checkpointing"] and kind == "trl",
        bf16=bool(gpu and torch.cuda.is_bf16_supported()),
        use_cpu=not gpu,
        max_length=params["max_seq_len"],
        packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},  # rows arrive tokenized, labels masked
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[_step_logger()],
    )
    trainer.remove_callback(PrinterCallback)
    if resume:
        log.info("resuming from %s", resume)
    started = time.time()
    trainer.train(resume_from_checkpoint=resume)
    elapsed = time.time() - started
    steps = trainer.state.global_step - (int(Path(resume).name.split("-")[-1]) if resume else 0)
    if splits["validation"] is not None and not (
        evaluate and trainer.state.global_step % params["eval_steps"] == 0
    ):
        trainer.evaluate()  # the last step's validation loss, unless the schedule just did it

    Path(adapter_dir).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", dir=Path(adapter_dir).parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        trainer.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        make_readable(tmp)
        if Path(adapter_dir).exists():
            shutil.rmtree(adapter_dir)
        os.replace(tmp, adapter_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows_log = history_rows(trainer.state.log_history)
    write_history(rows_log, train_log, loss_plot)
    train_losses = [r["loss"] for r in rows_log if r["split"] == "train"]
    val_losses = [r["loss"] for r in rows_log if r["split"] == "validation"]
    summary = {
        "trainer": _trainer_version(kind),
        "device": "GPU" if gpu else "CPU",
        "steps": trainer.state.global_step,
        "steps_this_run": steps,
        "seconds_this_run": round(elapsed, 1),
        "steps_per_s": round(steps / elapsed, 4) if steps and elapsed > 0 else None,
        "train_rows": n_train,
        "loss_first": train_losses[0] if train_losses else None,
        "loss_last": train_losses[-1] if train_losses else None,
        "validation_loss_last": val_losses[-1] if val_losses else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if gpu:
        summary["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    log.info(
        "trained %d steps (%d this run, %.3f steps/s), loss %s -> %s, peak RSS %d MiB",
        summary["steps"],
        steps,
        summary["steps_per_s"] or 0.0,
        summary["loss_first"],
        summary["loss_last"],
        summary["peak_rss_mb"],
    )
    del trainer, model
    gc.collect()
    identity = {
        "data_sha256": file_sha256(data_path),
        "data_source": meta.get("source"),
        "sft": {k: v for k, v in params.items() if k not in ("enabled",)},
        "training": summary,
    }
    merge(base_dir, adapter_dir, merged_dir, dtype, identity)
    return summary


def merge(base_dir, adapter_dir, merged_dir, dtype="bfloat16", identity=None):
    """Fold the adapter into the base weights and write a Hugging Face directory vLLM loads,
    with the base model's tokenizer files and a SOURCE.json naming base and adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir, merged_dir = Path(base_dir), Path(merged_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    if dtype == "auto":  # the base's own dtype (loading in fp32 above overwrote model.config)
        config = json.loads((base_dir / "config.json").read_text())
        dtype = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    model = model.to(getattr(torch, dtype))
    base = _source(base_dir)
    digest = adapter_sha256(adapter_dir)
    info = {
        "source": "sft",
        "name": f"{base.get('name', base_dir.name)}+lora-{digest[:12]}",
        "upstream": base.get("upstream", str(base_dir)),
        "license": base.get("license"),
        "base": {"dir": str(base_dir), **base},
        "adapter_sha256": digest,
        **(identity or {}),
    }
    merged_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{merged_dir.name}.", dir=merged_dir.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        for path in base_dir.iterdir():
            if path.is_file() and path.suffix not in _WEIGHTS and path.name not in _REWRITTEN:
                shutil.copy2(path, tmp / path.name)
        (tmp / "SOURCE.json").write_text(json.dumps(info, indent=2) + "\n")
        make_readable(tmp)
        if merged_dir.exists():
            shutil.rmtree(merged_dir)
        os.replace(tmp, merged_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("merged model written to %s (adapter sha256 %s)", merged_dir, digest[:12])
    return info
