"""The model card an export writes as `README.md`: Hugging Face's format (YAML front matter,
then Markdown), telling what the model is, what it was trained on and how well it does.

    from model.card import card_context, model_card
    context = card_context("20261122-001500-3fa2c1", "storage", checkpoint)
    text = model_card(state, checkpoint, "hf", context)

What a card can say depends on where the export starts (model/export.py `checkpoint_for`):
- a run id, or a train version folder in a store that a run recorded: the run record, the
  lineage from seeds or WARC files to the checkpoint (pipeline/store/lineage.py: each
  version's id, counts and drop reasons) and the run's evaluation (eval.json);
- a bare checkpoint file (a `stage train` folder, a copy): what the checkpoint holds (configs,
  step, tokens, tokenizer, token dataset id, base model) and the train.json beside it; the card
  says that the rest was not known.

Front matter keys follow huggingface_hub's ModelCardData: license, language, library_name,
pipeline_tag, tags, datasets (the sources: seed URLs, WARC file names, or their count) and
model-index (task, dataset, metrics with values), which the Hub shows as evaluation results.
The license defaults to "other": weights trained on crawled pages inherit those pages' terms,
which this project cannot know; pass one (`llmforge export --license apache-2.0`) to publish.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.store.compare import harness_metrics, value_at

DEFAULT_LICENSE = "other"
MAX_LISTED_SOURCES = 20  # datasets entries beyond this are given as a count


@dataclass
class CardContext:
    """What the store knows about the checkpoint being exported (empty: a bare checkpoint)."""

    run_id: str | None = None
    record: dict[str, Any] = field(default_factory=dict)  # run.json
    chain: list[dict[str, Any]] = field(default_factory=list)  # train version back to sources
    evaluation: dict[str, Any] | None = None  # the run's eval.json
    train_version: str | None = None


def _train_version_of(checkpoint: Path) -> tuple[Path, str] | None:
    """(storage root, version id) when `checkpoint` lies in <root>/versions/train/<id>/."""
    from pipeline.store.versions import VERSION_ID_PATTERN

    parts = Path(checkpoint).resolve().parents
    in_store = len(parts) > 3 and parts[1].name == "train" and parts[2].name == "versions"
    if in_store and re.fullmatch(VERSION_ID_PATTERN, parts[0].name):
        return parts[3], parts[0].name
    return None


def _run_recording(storage: Any, version_id: str) -> str | None:
    """The newest run that recorded train version `version_id`."""
    from pipeline.store.runs import read_runs

    for run_id, data in read_runs(storage):  # newest first
        recorded = {} if isinstance(data, DataError) else data.get("versions") or {}
        if (recorded.get("train") or {}).get("version_id") == version_id:
            return run_id
    return None


def card_context(ref: str | Path, storage_root: str | Path | None, checkpoint: Path) -> CardContext:
    """The run behind an export of `ref` (a run id, or a checkpoint path: its train version's
    newest run, if it lies in a store), else an empty context."""
    from pipeline.store.lineage import version_lineage
    from pipeline.store.runs import RunRecord
    from pipeline.store.versions import Storage

    found = _train_version_of(checkpoint)
    if not Path(ref).exists() and storage_root is not None:  # a run id
        storage, run_id = Storage.at(storage_root), str(ref)
    elif found is not None:  # a train version folder: the newest run that recorded it
        storage = Storage.at(found[0])
        run_id = _run_recording(storage, found[1]) if storage.runs.exists() else None
        if run_id is None:
            chain = version_lineage(storage, "train", found[1])
            return CardContext(chain=chain, train_version=found[1])
    else:
        return CardContext()
    record = RunRecord.load(storage, run_id)
    versions = record.data.get("versions") or {}
    train = versions["train"]["version_id"]
    evaluation = None
    evaluate = versions.get("evaluate")
    if evaluate and storage.has_version("evaluate", evaluate["version_id"]):
        folder = storage.version_folder("evaluate", evaluate["version_id"])
        if folder.is_file("eval.json"):
            evaluation = folder.read_json("eval.json")
    chain = version_lineage(storage, "train", train, record)
    return CardContext(run_id, record.data, chain, evaluation, train)


# ---- YAML front matter: block style, JSON-quoted scalars (valid YAML 1.1 and 1.2).


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value))


def _yaml(value: Any, indent: int = 0) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines += _yaml(item, indent + 2)
            else:
                lines.append(f"{pad}{key}: {'[]' if item == [] else _scalar(item)}")
    else:
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = _yaml(item, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines += nested[1:]
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


# ---- What the card says.


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _stage(chain: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((entry for entry in chain if entry["stage"] == name), None)


def _sources(chain: list[dict[str, Any]]) -> tuple[list[str], str]:
    """Seed URLs and WARC files the data came from, and a sentence describing them."""
    crawl = _stage(chain, "crawl")
    if crawl is not None:
        seeds, warcs = crawl.get("seeds") or [], crawl.get("warc_files") or []
        return list(seeds), f"crawled from {len(seeds)} seed URL(s) into {len(warcs)} WARC file(s)"
    for entry in chain:
        for source in entry.get("sources") or []:
            if source.get("source") == "files":
                paths = source.get("warc_paths") or []
                names = [Path(p).name for p in paths]
                return names, f"{len(paths)} existing WARC/document file(s)"
    return [], "not recorded (exported from a checkpoint alone)"


def _languages(chain: list[dict[str, Any]]) -> list[str]:
    """The languages the filter stage kept (none known without it)."""
    config = (_stage(chain, "filter") or {}).get("config") or {}
    language = config.get("language") or {}
    return list(language.get("languages") or []) if language.get("enabled", True) else []


def _metrics(state: dict[str, Any], train: dict[str, Any], evaluation: dict[str, Any] | None):
    """(model-index results, rows of the evaluation table)."""
    rows: list[tuple[str, str, str]] = []
    results: list[dict[str, Any]] = []
    dataset = {
        "type": "llmforge-tokens",
        "name": f"held-out val split of token dataset {state.get('token_dataset') or '?'}",
        "split": "val",
    }
    lm: list[dict[str, Any]] = []
    if evaluation:
        for key, name in (
            ("val_loss", "val loss (nats/token)"),
            ("perplexity", "perplexity"),
            ("bits_per_byte", "bits per byte"),
        ):
            if _finite(evaluation.get(key)):
                lm.append({"type": key, "value": round(float(evaluation[key]), 4), "name": name})
                rows.append(("evaluate", name, f"{evaluation[key]:.4f}"))
        targets = (evaluation.get("val_set") or {}).get("targets")
        if targets:
            rows.append(("evaluate", "val targets scored", f"{targets:,}"))
    for key, name in (("final_val_loss", "val loss"), ("final_val_bpb", "val bits per byte")):
        if _finite(train.get(key)):
            rows.append(("train (last val pass)", name, f"{train[key]:.4f}"))
            if not evaluation:
                lm.append({"type": key, "value": round(float(train[key]), 4), "name": name})
    if lm:
        results.append(
            {"task": {"type": "text-generation", "name": "Language modeling"}, "dataset": dataset}
            | {"metrics": lm}
        )
    hellaswag = (evaluation or {}).get("hellaswag")
    if hellaswag:
        hs = [
            {"type": key, "value": round(float(hellaswag[key]), 4), "name": f"HellaSwag {key}"}
            for key in ("acc", "acc_norm", "acc_char")
            if _finite(hellaswag.get(key))
        ]
        dataset = {"type": "Rowan/hellaswag", "name": "HellaSwag", "split": "validation"}
        task = {"type": "multiple-choice", "name": "Commonsense completion (HellaSwag)"}
        results.append({"task": task, "dataset": dataset, "metrics": hs})
        for metric in hs:
            rows.append(
                (
                    "evaluate",
                    f"{metric['name']} ({hellaswag.get('n')} items)",
                    f"{metric['value']:.4f}",
                )
            )
    by_task: dict[str, list[dict[str, Any]]] = {}  # lm-evaluation-harness, as runs compare
    for label, path in harness_metrics(evaluation):
        value = value_at(evaluation, path)
        if _finite(value):
            task, metric = path[2], path[3]
            entry = {"type": metric, "value": round(float(value), 4), "name": label}
            by_task.setdefault(task, []).append(entry)
            n = value_at(evaluation, ("lm_eval", "tasks", task, "n"))
            rows.append(("evaluate", f"{label} ({n} items)", f"{value:.4f}"))
    for task, metrics in by_task.items():
        harness_task = {"type": "multiple-choice", "name": f"lm-evaluation-harness {task}"}
        results.append(
            {"task": harness_task, "dataset": {"type": task, "name": task}} | {"metrics": metrics}
        )
    contamination = (evaluation or {}).get("contamination") or {}
    for name in ("val", "hellaswag"):
        found = contamination.get(name)
        if isinstance(found, dict) and found.get("items"):
            n = contamination.get("ngram", 13)
            share = f"{found['contaminated']:,} of {found['items']:,} items"
            rows.append(("evaluate", f"{name} items with a train {n}-gram", share))
    return results, rows


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _counts_cells(counts: dict[str, Any]) -> tuple[str, str, str, str]:
    from pipeline.stage import scalar_extras

    drops = counts.get("drops") or {}
    dropped = ", ".join(f"{reason} {n:,}" for reason, n in drops.items()) or "-"
    keep = ("tokens_train", "tokens_val", "tokenizer", "pages", "bytes", "steps", "tokens_seen")
    extra = {k: v for k, v in scalar_extras(counts).items() if k in keep}
    notes = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in extra.items())
    docs_in, docs_out = counts.get("docs_in"), counts.get("docs_out")
    return (
        "-" if docs_in is None else f"{docs_in:,}",
        "-" if docs_out is None else f"{docs_out:,}",
        dropped,
        notes or "-",
    )


def _load_snippet(fmt: str, architecture: str) -> list[str]:
    if fmt == "hf":
        return [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")',
            f"# {architecture}",
            'model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/FOLDER")',
            'ids = tokenizer("The meaning of life is", return_tensors="pt").input_ids',
            "print(tokenizer.decode(model.generate(ids, max_new_tokens=40, do_sample=False)[0]))",
            "```",
        ]
    return [
        "```python",
        "from model.export import load_exported  # llmforge",
        "",
        'model = load_exported("PATH/TO/THIS/FOLDER")  # a model.gpt.GPT in eval mode',
        "```",
        "",
        "`tokenizer.json` here loads with `transformers.AutoTokenizer` or `tokenizers`.",
    ]


def _read_train_summary(checkpoint: Path) -> dict[str, Any]:
    """train.json beside the checkpoint (a train version or `stage train` folder), or {}."""
    path = Path(checkpoint).parent / "train.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _run_rows(state: dict[str, Any], train: dict[str, Any], context: CardContext) -> list:
    record, vocab = context.record, (state.get("model_config") or {}).get("vocab_size", 0)
    when = f"{record.get('started_at')} / {record.get('finished_at')}" if record else "unknown"
    speed = train.get("tokens_per_s")
    rows = [
        ("run id", context.run_id or "unknown"),
        ("train version", context.train_version or "unknown"),
        ("git commit", record.get("git_commit") or "unknown"),
        ("run started / finished", when),
        ("checkpoint step", state.get("step")),
        ("tokens trained on", f"{state.get('tokens_seen') or 0:,}"),
        ("token dataset", state.get("token_dataset") or "unknown"),
        ("tokenizer", f"{state.get('tokenizer') or 'gpt2'} (vocab {vocab:,})"),
        ("plan", train.get("plan_summary") or "-"),
        ("hardware", train.get("hardware") or train.get("device") or "unknown"),
        ("precision", train.get("precision") or "unknown"),
        ("training time", f"{float(state.get('elapsed_s') or 0):,.1f} s"),
        ("training speed", f"{speed:,.0f} tokens/s" if speed else "-"),
        ("world size", train.get("world_size", 1)),
    ]
    base = state.get("init_from")
    if base:
        started = f"{base.get('ref')} ({base.get('kind')}, sha256 {base.get('sha256')})"
        rows.append(("started from", started))
    return rows


ARCH_FIELDS = (
    *("d_model", "n_layers", "n_heads", "context_length", "positional", "norm", "mlp"),
    *("qk_norm", "bias", "tie_embeddings"),
)


def _arch_rows(
    state: dict[str, Any], fmt: str, architecture: str, params: int | None, optimizer: str | None
) -> list:
    model_cfg, cfg = state.get("model_config") or {}, state.get("train_config") or {}
    base = state.get("init_from")
    batch = f"{cfg.get('lr')} / {cfg.get('batch_size')} / {cfg.get('grad_accum_steps')}"
    return [
        ("export", f"{fmt} ({architecture})"),
        ("parameters", f"{params:,}" if params else "unknown"),
        ("preset", f"from {base.get('kind')}" if base else cfg.get("preset", "unknown")),
        *((key, model_cfg[key]) for key in ARCH_FIELDS if key in model_cfg),
        ("optimizer", optimizer or cfg.get("optimizer", "unknown")),
        ("lr / batch / accumulation", batch),
    ]


def _data_lines(state: dict[str, Any], chain: list[dict[str, Any]]) -> list[str]:
    from pipeline.store.lineage import format_lineage

    if not chain:
        return [
            f"Token dataset `{state.get('token_dataset') or 'unknown'}`; its sources and the "
            "filters' counts are in the run that made it, not in the checkpoint."
        ]
    sources, sources_text = _sources(chain)
    lines = [f"Sources: {sources_text}."]
    if sources:
        lines += [""] + [f"- {s}" for s in sources[:MAX_LISTED_SOURCES]]
        if len(sources) > MAX_LISTED_SOURCES:
            lines.append(f"- ... and {len(sources) - MAX_LISTED_SOURCES} more")
    rows = [
        (e["stage"], f"`{e['version_id']}`", *_counts_cells(e.get("counts") or {}))
        for e in reversed(chain)
    ]
    header = ("stage", "version", "docs in", "docs out", "dropped (reason count)", "notes")
    lines += ["", "Each stage's version (its id hashes config, inputs and code) and counts:", ""]
    lines += _table(header, rows)
    lines += ["", "Lineage (checkpoint back to the sources, with each version's config):", ""]
    return lines + ["```text", format_lineage(chain), "```"]


def _front_matter(
    name: str,
    fmt: str,
    architecture: str,
    context: CardContext,
    results: list,
    license: str,
    continued: bool,
) -> dict[str, Any]:
    sources, _ = _sources(context.chain)
    header: dict[str, Any] = {"license": license}
    languages = _languages(context.chain)
    if languages:
        header["language"] = languages
    family = architecture.lower().removesuffix("forcausallm").removesuffix("lmheadmodel")
    tags = ["llmforge", "text-generation", "causal-lm", family]  # gpt2, qwen3, llama, ...
    if continued:
        tags.append("continued-pretraining")  # train.init_from: it started from a base
    header |= {
        "library_name": "transformers" if fmt == "hf" else "llmforge",
        "pipeline_tag": "text-generation",
        "tags": tags,
    }
    if sources:
        many = len(sources) > MAX_LISTED_SOURCES
        header["datasets"] = [f"{len(sources)} sources"] if many else sources
    metrics = sorted({m["type"] for result in results for m in result["metrics"]})
    if metrics:
        header["metrics"] = metrics
        header["model-index"] = [{"name": name, "results": results}]
    return header


def model_card(
    state: dict[str, Any],
    checkpoint: Path,
    fmt: str,
    context: CardContext | None = None,
    architecture: str = "llmforge-gpt",
    params: int | None = None,
    license: str | None = None,
) -> str:
    """README.md text for an export of `checkpoint` (its loaded `state`) in format `fmt`."""
    context = context or CardContext()
    train = _read_train_summary(checkpoint)
    results, metric_rows = _metrics(state, train, context.evaluation)
    name = f"llmforge-{context.run_id or Path(checkpoint).resolve().parent.name}"
    chosen = license or DEFAULT_LICENSE
    continued = bool(state.get("init_from"))
    header = _front_matter(name, fmt, architecture, context, results, chosen, continued)
    out = ["---", *_yaml(header), "---", "", f"# {name}", ""]
    if context.run_id:
        out.append(
            f"A GPT trained by llmforge run `{context.run_id}` on web pages "
            f"{_sources(context.chain)[1]}, filtered, deduplicated and tokenized; every number "
            "below is from that run's record and versions."
        )
    elif context.chain:
        out.append(
            "Exported from a train version no recorded run names: its data's lineage and "
            "counts below come from the store's versions; no evaluation of it is known."
        )
    else:
        out.append(
            "Exported from a checkpoint file alone (no run record): the data's lineage, its "
            "counts and the evaluation are not known here. What follows is what "
            f"`{Path(checkpoint).name}` and the train.json beside it hold."
        )
    if license is None:
        out += [
            "",
            f"License: `{DEFAULT_LICENSE}`, the default: the weights were trained on crawled "
            "pages under their own terms, which this card cannot know; choose a license "
            "before publishing (`llmforge export --license ...`).",
        ]
    out += ["", "## The run", "", *_table(("", "value"), _run_rows(state, train, context))]
    optimizer = train.get("optimizer")  # the resolved one (auto: adamw or muon)
    arch = _arch_rows(state, fmt, architecture, params or train.get("params"), optimizer)
    out += ["", "## Architecture", "", *_table(("", "value"), arch)]
    out += ["", "## Evaluation", ""]
    if metric_rows:
        out += _table(("from", "metric", "value"), metric_rows)
    else:
        out.append("No evaluation is known for this checkpoint.")
    samples = (context.evaluation or {}).get("samples") or []
    if samples:
        out += ["", "Samples (the evaluate stage's fixed prompts and seed):", ""]
        for sample in samples[:4]:
            text = (sample["prompt"] + sample["completion"]).replace("```", "'''")
            out += ["```text", text.strip(), "```"]
    out += ["", "## Training data", "", *_data_lines(state, context.chain)]
    out += ["", "## How to load", "", *_load_snippet(fmt, architecture), ""]
    return "\n".join(out)
