#!/usr/bin/env bash
# One-shot GPU check: the GPU-marked tests, the training benchmark for `mini` and `gpt2-124m`
# (compile on, bf16), a short real training run through the pipeline CLI on the GPU, the budget
# mode (trained tokenizer, `train.preset=auto`, 5 minutes planned by `train.max_seconds`), then
# one table (tokens/s, MFU, peak memory, bits per byte, with the targets) under the output folder.
#
#   bash bench/gpu_check.sh                 # on a CUDA machine, < 13 minutes, no network
#   bash bench/gpu_check.sh --part checks   # steps 1-3 only (< 8 minutes)
#   bash bench/gpu_check.sh --part budget   # the budget mode only (~6 minutes)
#   bash bench/gpu_check.sh --dry-run       # on CPU: tiny sizes, the same code paths, ~2 min
#   OUT=/some/dir bash bench/gpu_check.sh   # results in $OUT/gpu_check/ (default bench/out/)
#
# Needs the project's dependencies and tiktoken's gpt2 BPE files offline: $TIKTOKEN_CACHE_DIR,
# else .cache/tiktoken in the checkout, else ../shared/tiktoken_cache (copy the folder into
# .cache/tiktoken before sending the checkout to a machine without network).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
PART=all
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --part)
      PART=${2:-}; shift
      case "$PART" in all|checks|budget) ;; *)
        echo "gpu_check.sh: --part must be all, checks or budget, got '$PART'" >&2; exit 2 ;;
      esac ;;
    *) echo "gpu_check.sh: unknown argument '$1' (use --dry-run, --part all|checks|budget)" >&2
       exit 2 ;;
  esac
  shift
done
CHECKS=$( [ "$PART" != budget ] && echo 1 || echo 0 )
BUDGET=$( [ "$PART" != checks ] && echo 1 || echo 0 )

PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ]; then
  for dir in .cache/tiktoken ../shared/tiktoken_cache; do
    if [ -d "$dir" ]; then export TIKTOKEN_CACHE_DIR="$PWD/$dir"; break; fi
  done
fi
RESULTS="${OUT:-bench/out}/gpu_check"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
export PREFECT_HOME="$WORK/prefect"

if [ "$DRY" = 1 ]; then
  # Tiny sizes on the CPU; compile off (Inductor's C++ build alone takes minutes on 2 cores).
  DEVICE=cpu; PREC=fp32; COMPILE=off
  BENCH_MINI=(--preset tiny --batch 2 --steps 1 --reps 1 --warmup 1 --variants textbook ours)
  BENCH_GPT2=(--preset tiny --batch 2 --steps 1 --reps 1 --warmup 1 --variants ours)
  TRAIN_SET=(--set train.preset=tiny --set train.max_steps=4 --set train.batch_size=2
             --set train.eval_tokens=512 --set train.compile=false)
  BUDGET_SET=(--set train.max_seconds=8 --set train.batch_size=2 --set train.eval_tokens=512
              --set train.compile=false)
  VOCAB=512
  DOCS=60
else
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv
  DEVICE=cuda; PREC=bf16; COMPILE=on
  # Batch sizes for one H200 (~139 GiB): mini 64 x 256 = 16k and 256 x 256 = 65k tokens a step;
  # gpt2-124m 32 x 1024 tokens (nanoGPT runs 12 x 1024 per micro-step on a 40 GB A100). One
  # gpt2 batch size: each compiles two models, and the whole script must stay under 8 minutes.
  BENCH_MINI=(--preset mini --batch 64 256 --steps 10 --reps 3 --warmup 3)
  BENCH_GPT2=(--preset gpt2-124m --batch 32 --steps 10 --reps 3 --warmup 3
              --variants nanogpt ours)
  TRAIN_SET=(--set train.preset=mini --set train.max_steps=300 --set train.batch_size=64
             --set train.eval_interval=100 --set train.compile=true)
  # Budget mode: 5 minutes of wall time planned by the trainer, the model sized by preset=auto.
  BUDGET_SET=(--set train.max_seconds=300 --set train.batch_size=64 --set train.compile=true)
  VOCAB=8192
  DOCS=1500
fi

if [ "$CHECKS" = 1 ]; then
echo "== 1/5 GPU-marked tests"
if [ "$DRY" = 1 ]; then
  # No CUDA here: check they are collected under -m gpu and deselected by default.
  "$PY" -m pytest -q --collect-only -m gpu tests/model/test_gpu.py | tail -1
  # pytest exits 5 when all tests are deselected: that is the expected answer here.
  "$PY" -m pytest -q --collect-only tests/model/test_gpu.py > "$WORK/collect.txt" || [ $? = 5 ]
  tail -1 "$WORK/collect.txt"
  grep -q "deselected" "$WORK/collect.txt"
else
  "$PY" -m pytest -q -m gpu tests/model/test_gpu.py -p no:cacheprovider | tee "$RESULTS/tests.txt"
fi

echo "== 2/5 benchmark (bench/train.py)"
"$PY" bench/train.py "${BENCH_MINI[@]}" --device "$DEVICE" --precision "$PREC" \
  --compile "$COMPILE" --out "$RESULTS/bench_mini.json"
"$PY" bench/train.py "${BENCH_GPT2[@]}" --device "$DEVICE" --precision "$PREC" \
  --compile "$COMPILE" --out "$RESULTS/bench_gpt2.json"

fi

# Only the checkout travels to a GPU machine: make the documents from the sample site's prose.
"$PY" - "$WORK/docs" "$DOCS" <<'EOF'
import random
import sys
from pathlib import Path

import pyarrow as pa

from pipeline.documents import DOCUMENT_SCHEMA, atomic_write_table, doc_id, shard_name
from pipeline.sample_site.prose import TOPICS, EnglishWriter

out, count = Path(sys.argv[1]), int(sys.argv[2])
rng = random.Random(0)
rows = []
for i in range(count):
    writer = EnglishWriter(rng, sorted(TOPICS)[i % len(TOPICS)])
    url = f"http://sample.test/article/{i}"
    text = "\n\n".join(writer.body(300, 600))
    rows.append({"id": doc_id(url), "url": url, "domain": "sample.test", "title": writer.title(),
                 "text": text, "language": "en", "language_score": 1.0})
out.mkdir(parents=True)
atomic_write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), out / shard_name(0))
print(f"{count} documents, {sum(len(r['text']) for r in rows) / 1e6:.1f} MB of text")
EOF
if [ "$CHECKS" = 1 ]; then
echo "== 3/5 training through the pipeline CLI (stage tokenize -> stage train)"
"$PY" -m flows.cli stage tokenize --input "$WORK/docs" --output "$WORK/tokens"
"$PY" -m flows.cli stage train --input "$WORK/tokens" --output "$WORK/model" \
  --set train.device="$DEVICE" --set train.precision="$PREC" "${TRAIN_SET[@]}"
cp "$WORK/model/train.json" "$RESULTS/train.json"
fi

if [ "$BUDGET" = 1 ]; then
echo "== 4/5 budget mode: trained tokenizer, preset=auto, the run planned by max_seconds"
"$PY" -m flows.cli stage tokenize --input "$WORK/docs" --output "$WORK/tokens-bpe" \
  --set tokenize.tokenizer=train --set tokenize.vocab_size="$VOCAB"
"$PY" -m flows.cli stage train --input "$WORK/tokens-bpe" --output "$WORK/model-budget" \
  --set train.device="$DEVICE" --set train.precision="$PREC" --set train.preset=auto \
  "${BUDGET_SET[@]}"
cp "$WORK/model-budget/train.json" "$RESULTS/train_budget.json"
fi

echo "== 5/5 table"
"$PY" - "$RESULTS" "$DRY" <<'EOF'
import json
import sys
import time
from pathlib import Path

results, dry = Path(sys.argv[1]), sys.argv[2] == "1"
PEAK = 989e12  # H100 SXM / H200 dense bf16 FLOP/s (REFERENCE, Training)
TARGETS = {"gpt2-124m": ("MFU >= 45%", lambda r: (r["mfu"] or 0) >= 0.45),
           "mini": ("tokens/s >= 1M", lambda r: r["tokens_per_s"] >= 1e6)}
rows = []
for name in ("bench_mini.json", "bench_gpt2.json"):
    if not (results / name).exists():  # --part budget
        continue
    for r in json.loads((results / name).read_text()):
        target, ok = TARGETS.get(r["preset"], ("-", None))
        met = "-" if r["variant"] != "ours" or ok is None else ("yes" if ok(r) else "NO")
        rows.append((f"bench {r['variant']}", r["preset"], r["batch_size"], r["precision"],
                     "on" if r["compile"] else "off", f"{r['tokens_per_s']:,.0f}",
                     f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-",
                     r["peak_mem_gib"] or "-", target, met))
for what, name in (("stage train", "train.json"), ("budget (auto)", "train_budget.json")):
    if not (results / name).exists():  # the part that did not run
        continue
    t = json.loads((results / name).read_text())
    cuda = t["device"].startswith("cuda")
    mfu = t["flops_per_token"] * t["tokens_per_s"] / PEAK if cuda else None
    arch = t["model_config"]
    size = f"{t['train_config']['preset']} (d{arch['n_layers']}, {t['params'] / 1e6:.1f}M)"
    bpb = t.get("final_val_bpb")
    result = f"val loss {t['final_val_loss']:.3f}" + (f", {bpb:.3f} bpb" if bpb else "")
    rows.append((what, size, t["train_config"]["batch_size"], t["precision"],
                 str(t["compile"]), f"{t['tokens_per_s']:,.0f}",
                 f"{100 * mfu:.1f}%" if mfu else "-", "-",
                 f"{result} after {t['steps']} steps, {t['elapsed_s']:.0f} s", "-"))
head = ("what", "preset", "batch", "precision", "compile", "tokens/s", "MFU (989 TFLOP/s)",
        "peak GiB", "target", "met")
lines = [f"gpu_check {'DRY RUN (cpu)' if dry else ''} {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
         "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
(results / "gpu_check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "results in $RESULTS/"
