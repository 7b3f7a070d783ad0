"""EleutherAI's lm-evaluation-harness on a checkpoint in memory, offline (the `eval` extra).

    from model.harness import HarnessLM, run_harness
    run_harness(cfg, HarnessLM(model, encoding, precision))  # {"version": ..., "tasks": {...}}

`HarnessLM` is lm_eval's model interface (`TemplateLM`: loglikelihood, loglikelihood_rolling,
generate_until) over our GPT and the checkpoint's own tiktoken Encoding. Scoring the model where
it is, rather than through its Hugging Face export (model/export.py) and lm_eval's `hf` model:
the logits are our model's own, not a transformers class's (equal to 1e-4), every
configuration scores (the export refuses a few, such as rope with LayerNorm), nothing is
written to disk per evaluation, transformers is not needed at run time (it is a dev
dependency), and the evaluation's device and precision apply.

Tasks, all read from local files (Hugging Face offline mode is switched on, nothing is
downloaded):
- "hellaswag": model/lm_eval_tasks/hellaswag.yaml, the stock task on `evaluate.hellaswag_path`
  and its first `hellaswag_limit` items, the same ones our own scorer (model/hellaswag.py) reads;
- any task defined in lm_eval's YAML format in the folders of `evaluate.lm_eval_include`:
  yours (`dataset_path: json` and `dataset_kwargs.data_files` naming your files), or a folder
  of lm_eval's own tasks (`lm_eval/tasks/arc`) when the Hugging Face datasets cache already
  holds their data.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import lm_eval
import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.evaluator import evaluate as harness_evaluate
from lm_eval.tasks import TaskManager
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from model.gpt import GPT
from model.precision import Precision
from pipeline.errors import DataError

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
SHIPPED = {"hellaswag": TASKS_DIR / "hellaswag.yaml"}


class HarnessLM(TemplateLM):
    """lm_eval's LM over a GPT in memory: sequences are cut to the model's context from the
    left, as our HellaSwag scorer and lm_eval's `hf` model cut them, and scored in batches of
    `batch_size` rows, longest first (less padding)."""

    def __init__(self, model: GPT, encoding, precision: Precision, batch_size: int = 8):
        super().__init__()
        self.model = model.eval()
        self.encoding = encoding
        self.precision = precision
        self.batch_size = batch_size
        self.max_length = model.cfg.context_length

    @property
    def eot_token_id(self) -> int:
        # Also the prefix of an empty context (TemplateLM): GPT-2 sees <|endoftext|> before
        # each document in training, as our token datasets do.
        return self.encoding.eot_token

    @property
    def tokenizer_name(self) -> str:
        return self.encoding.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list:
        return self.encoding.encode_ordinary(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.encoding.decode(tokens)

    @torch.no_grad()
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            logits, _ = self.model(x.to(self.precision.device))
        return logits.float()

    def score_tokens(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(summed log-probability of `continuation`, whether greedy decoding gives it) for
        each (context, continuation) pair of token lists."""
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        rows = []
        for i, (context, continuation) in enumerate(pairs):
            tokens = (context + continuation)[-(self.max_length + 1) :]
            rows.append((i, tokens, min(len(continuation), len(tokens) - 1)))
        rows.sort(key=lambda row: -len(row[1]))
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            width = len(batch[0][1]) - 1  # inputs drop the last token: it is only a target
            x = torch.zeros(len(batch), width, dtype=torch.long)  # right-padded with token 0
            for j, (_, tokens, _) in enumerate(batch):
                x[j, : len(tokens) - 1] = torch.tensor(tokens[:-1])
            logits = self._logits(x)  # (B, width, V)
            for j, (i, tokens, n) in enumerate(batch):
                end = len(tokens) - 1  # position that predicts the last token
                logprobs = F.log_softmax(logits[j, end - n : end], dim=-1)  # (n, V)
                target = torch.tensor(tokens[-n:], device=logprobs.device)
                picked = logprobs.gather(1, target[:, None]).squeeze(1)
                greedy = bool((logprobs.argmax(dim=-1) == target).all())
                results[i] = (float(picked.sum()), greedy)
        return results  # type: ignore[return-value]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        return self.score_tokens([(context, continuation) for _, context, continuation in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts (perplexity tasks): disjoint windows of the context
        length, each after the tokens before it, the first after <|endoftext|>."""
        totals = []
        for request in requests:
            (text,) = request.args
            windows = [
                make_disjoint_window(window)
                for window in get_rolling_token_windows(
                    self.tok_encode(text), self.eot_token_id, self.max_length, context_len=1
                )
            ]
            totals.append(sum(logprob for logprob, _ in self.score_tokens(windows)))
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations (the harness's default, do_sample false) that stop at
        <|endoftext|>, at max_gen_toks (256 unless the task says) or before the first stop
        string the task gives in `until`."""
        outputs = []
        for request in requests:
            context, kwargs = request.args
            stops = kwargs.get("until") or []
            stops = [stops] if isinstance(stops, str) else list(stops)
            tokens = self.tok_encode(context) or [self.eot_token_id]
            new: list[int] = []
            text = ""
            for _ in range(int(kwargs.get("max_gen_toks", 256))):
                window = torch.tensor([(tokens + new)[-self.max_length :]])
                token = int(self._logits(window)[0, -1].argmax())
                if token == self.eot_token_id:
                    break
                new.append(token)
                text = self.tok_decode(new)
                if any(stop in text for stop in stops):
                    break
            for stop in stops:
                text = text.split(stop)[0]
            outputs.append(text)
        return outputs


@contextmanager
def offline() -> Iterator[None]:
    """Hugging Face offline mode while the harness loads data (datasets reads the flag at
    each load): a task whose data is not local fails at once instead of reaching the Hub."""
    saved = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = saved


def _data_file(path: str | None) -> Path:
    if not path:
        raise DataError("evaluate.lm_eval_tasks has 'hellaswag': set evaluate.hellaswag_path")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{path}: no such file (evaluate.hellaswag_path, lm_eval task hellaswag)")
    return file.resolve()


def task_manager(include: list[str], names: list[str], work_dir: Path, hellaswag_path: str | None):
    """A TaskManager that knows `names`: the shipped tasks (written to `work_dir` as YAMLs
    that include ours and name the user's data file) and those of the `include` folders."""
    folders = []
    for folder in include:
        if not Path(folder).expanduser().is_dir():
            raise DataError(f"{folder}: no such folder (evaluate.lm_eval_include)")
        folders.append(str(Path(folder).expanduser()))
    if "hellaswag" in names:
        # lm_eval's `include`: our task with the data file set (JSON is YAML, so JSON quoting
        # keeps any path intact). Indexed last, so it wins over a same-named included task.
        data = {"data_files": {"validation": str(_data_file(hellaswag_path))}}
        text = f"include: {json.dumps(str(SHIPPED['hellaswag']))}\n"
        text += f"dataset_kwargs: {json.dumps(data)}\n"
        (work_dir / "hellaswag.yaml").write_text(text, encoding="utf-8")
        folders.append(str(work_dir))
    # Not lm_eval's own ~15,000 tasks: indexing them takes 13 s on a 2-core CPU. A folder of
    # them (lm_eval/tasks/arc) in lm_eval_include brings them in.
    manager = TaskManager(include_path=folders or None, include_defaults=False)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        raise DataError(
            f"evaluate.lm_eval_tasks: no task {', '.join(map(repr, unknown))} (llmforge ships "
            f"{', '.join(SHIPPED)}; others come from the evaluate.lm_eval_include folders)"
        )
    return manager


def check_tasks(cfg) -> None:
    """The configured tasks exist and the shipped ones' data files are there (before any
    work: a stage check)."""
    if cfg.lm_eval_tasks:
        with tempfile.TemporaryDirectory(prefix="llmforge-lm-eval-") as work:
            task_manager(cfg.lm_eval_include, cfg.lm_eval_tasks, Path(work), cfg.hellaswag_path)


def _metrics(results: dict[str, Any]) -> dict[str, float]:
    """{"acc,none": .5, "acc_stderr,none": .03, "alias": ...} -> {"acc": .5, "acc_stderr": .03};
    a metric under another filter keeps it: "exact_match,flexible" -> "exact_match/flexible"."""
    out = {}
    for key, value in results.items():
        metric, _, filter_name = key.partition(",")
        if isinstance(value, int | float) and filter_name:
            out[metric if filter_name == "none" else f"{metric}/{filter_name}"] = float(value)
    return out


def evaluate_task(
    lm: HarnessLM,
    manager: TaskManager,
    name: str,
    limit: int | None,
    seed: int = 1234,
    samples: bool = False,
) -> dict[str, Any]:
    """lm_eval's evaluator on one task, zero-shot unless the task sets num_fewshot; the raw
    result (with per-document `samples` if asked: eval.json keeps only the metrics)."""
    try:
        with offline():
            loaded = manager.load([name])  # each task reads its data here
    except (FileNotFoundError, ValueError, KeyError, ConnectionError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"lm_eval task {name!r}: cannot load its data ({first})") from None
    for task in loaded["tasks"].values():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=seed)  # simple_evaluate's fewshot_random_seed default
    with offline():  # a metric may load files too (`evaluate` package)
        return harness_evaluate(
            # stderrs of means are closed-form; 1000 bootstrap draws for the others (the
            # harness defaults to 100,000)
            lm=lm,
            task_dict=loaded,
            limit=limit,
            bootstrap_iters=1000,
            log_samples=samples,
        )


def summarize(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task: n (documents scored) and its metrics, for eval.json."""
    counts = raw.get("n-samples", {})
    return {
        name: {"n": int(counts.get(name, {}).get("effective", 0)), **_metrics(results)}
        for name, results in raw["results"].items()
    }


def iter_task_names(cfg) -> Iterator[tuple[str, int | None]]:
    """(task, limit): the shipped hellaswag reads hellaswag_limit items, like our scorer."""
    for name in cfg.lm_eval_tasks:
        yield name, cfg.hellaswag_limit if name == "hellaswag" else cfg.lm_eval_limit


def run_harness(cfg, lm: HarnessLM) -> dict[str, Any]:
    """eval.json's `lm_eval`: the harness's version and each task's n and metrics."""
    tasks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="llmforge-lm-eval-") as work:
        manager = task_manager(
            cfg.lm_eval_include, cfg.lm_eval_tasks, Path(work), cfg.hellaswag_path
        )
        for name, limit in iter_task_names(cfg):
            tasks.update(summarize(evaluate_task(lm, manager, name, limit)))
    if "hellaswag" in cfg.lm_eval_tasks:
        tasks["hellaswag"]["data"] = str(_data_file(cfg.hellaswag_path))
    return {"version": lm_eval.__version__, "tasks": tasks}
