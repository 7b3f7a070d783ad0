"""lm-evaluation-harness on our model (model/harness.py) against our own HellaSwag scorer.

Both score the same 200 HellaSwag items with a small model trained a few steps. Where they
score the same text the same way they must choose the same ending on every item: acc (the
highest summed log-probability of " " + ending after the context) and our acc_norm (the highest
mean per token), and the harness's acc_norm (the highest log-probability per character of the
ending) against our acc_char, which scores that way. The stock task's prompt differs from ours
(the activity label in front, ctx_b capitalized), which must move acc and acc_norm by at most 1
point (test_stock_task_within_a_point_of_ours).

The model uses a 2,048-token BPE trained on the same text (pipeline/tokenize/bpe.py, as
`tokenize.tokenizer = "train"` makes): a 50,257-way GPT-2 head would make each scorer's pass
over the 800 endings cost ~25x more, for the same comparison.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from model.config import EvalConfig, ModelConfig
from model.gpt import GPT
from model.harness import HarnessLM, evaluate_task, task_manager
from model.hellaswag import iter_items, render, score
from model.precision import setup_precision
from model.stages import EVALUATE, check_eval
from pipeline.config import PipelineConfig
from pipeline.errors import DataError
from pipeline.tokenize import bpe
from tests.conftest import shared_data

ITEMS = 200
# A context and ending of the first 200 items is at most 146 tokens of this BPE: all fit
# whole, so neither scorer cuts off the activity label the stock task puts in front.
CONTEXT = 160

# Our scorer's rendering as a harness task: the context as it is, each ending after " " (the
# harness's default target_delimiter), no activity label, no cleaning.
AS_OURS = """\
task: hellaswag_as_llmforge
dataset_path: json
dataset_kwargs: {{"data_files": {{"validation": "{path}"}}}}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{ctx}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: endings
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: for a model this small a second only adds synchronization, which
    costs 40x per forward on a shared, oversubscribed 2-core machine (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hellaswag_file():
    return shared_data("hellaswag", "hellaswag_val.jsonl")


@pytest.fixture(scope="module")
def trained():
    """A 2-layer model trained 60 AdamW steps on tinyshakespeare with its own BPE: far from
    good (HellaSwag near chance), but its choices follow what it learned, not noise."""
    path = shared_data("text", "tinyshakespeare", "data", "tinyshakespeare", "input.txt")
    text = path.read_text(encoding="utf-8")
    encoding = bpe.encoding_from_spec(bpe.train_spec(text.split("\n\n"), 2048))
    ids = torch.tensor(encoding.encode_ordinary(text))
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=encoding.n_vocab, context_length=CONTEXT, d_model=64,
                      n_heads=2, n_layers=2)  # fmt: skip
    model = GPT(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        starts = torch.randint(0, len(ids) - CONTEXT - 1, (8,)).tolist()
        x = torch.stack([ids[i : i + CONTEXT] for i in starts])
        y = torch.stack([ids[i + 1 : i + CONTEXT + 1] for i in starts])
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 7.0  # learned something: a uniform guess over 2,048 costs 7.6 nats
    return HarnessLM(model.eval(), encoding, setup_precision("cpu", "fp32"), batch_size=16)


@pytest.fixture(scope="module")
def ours(trained, hellaswag_file):
    """Our scorer per item: (summed loss, mean loss) of each ending, and the label."""
    lm = trained
    rows = []
    for item in iter_items(hellaswag_file, ITEMS):
        tokens, mask, label = render(item, lm.encoding.encode_ordinary, CONTEXT)
        summed, mean = score(lm.model, tokens, mask)
        rows.append((summed, mean, label))
    return rows


def accuracy(rows, column: int) -> float:
    return sum(int(row[column].argmin()) == row[2] for row in rows) / len(rows)


def harness_run(lm, include, names, hellaswag_path, tmp_path, task):
    manager = task_manager([str(include)] if include else [], names, tmp_path, hellaswag_path)
    raw = evaluate_task(lm, manager, task, ITEMS, samples=True)
    samples = sorted(raw["samples"][task], key=lambda s: s["doc_id"])
    return raw["results"][task], samples


def test_same_rendering_same_choices_item_by_item(trained, ours, hellaswag_file, tmp_path):
    """The harness through HarnessLM on our rendering (AS_OURS). The same tokens: the BPE's
    split pattern starts a chunk at the space before each ending, so encode(ctx + " " + e) is
    encode(ctx) + encode(" " + e), the harness's cut (whole minus context) and ours (context,
    then " " + ending) alike. The same log-probabilities, so the same acc choice and the same
    per-token (our acc_norm) choice on every item."""
    lm = trained
    encode = lm.encoding.encode_ordinary
    items = list(iter_items(hellaswag_file, ITEMS))
    for item in items:
        for ending in item["endings"]:
            assert encode(item["ctx"] + " " + ending) == encode(item["ctx"]) + encode(" " + ending)
    include = tmp_path / "tasks"
    include.mkdir()
    (include / "as_ours.yaml").write_text(AS_OURS.format(path=hellaswag_file))
    results, samples = harness_run(
        lm, include, ["hellaswag_as_llmforge"], None, tmp_path, "hellaswag_as_llmforge"
    )
    assert len(samples) == ITEMS
    for sample, item, (summed, mean, label) in zip(samples, items, ours, strict=True):
        assert tuple(sample["arguments"][0]) == (item["ctx"], " " + item["endings"][0])
        logprobs = torch.tensor([ll for ll, _ in sample["filtered_resps"]])
        assert torch.allclose(logprobs, -summed, atol=1e-3), (sample["doc_id"], logprobs, summed)
        assert int(logprobs.argmax()) == int(summed.argmin())
        lengths = torch.tensor([len(encode(" " + ending)) for ending in item["endings"]])
        assert int((logprobs / lengths).argmax()) == int(mean.argmin())
        chars = torch.tensor([float(len(ending)) for ending in item["endings"]])
        assert sample["acc_norm"] == float(int((summed / chars).argmin()) == label)  # acc_char
        assert sample["acc"] == float(int(summed.argmin()) == label)
    assert results["acc,none"] == pytest.approx(accuracy(ours, 0))
    assert results["acc_norm,none"] == pytest.approx(char_accuracy(ours, items))


def char_accuracy(rows, items) -> float:
    """Our acc_char: the lowest loss per character of the ending (the harness's acc_norm)."""
    chars = [torch.tensor([float(len(e)) for e in item["endings"]]) for item in items]
    hits = [int((row[0] / c).argmin()) == row[2] for row, c in zip(rows, chars, strict=True)]
    return sum(hits) / len(rows)


def test_stock_task_within_a_point_of_ours(trained, ours, hellaswag_file, tmp_path):
    """The shipped task is the stock one: its prompt puts "Activity label: " before the
    context and capitalizes ctx_b, and the harness's cleaning changes none of these items'
    endings (no brackets). The endings are scored the same way after a longer context; for a
    model this small an ending's log-probability depends mostly on the ending, so acc moves by
    at most 1 point (measured: 0, the same choice on all 200 items).

    Its acc_norm divides an ending's log-probability by its length in characters, our acc_norm
    (build-nanogpt's) by its length in tokens: a different ranking wherever an item's endings
    have different characters per token (measured here: 0.265 per character, 0.215 per token).
    Our acc_char divides by characters too, and is held within a point of the harness's."""
    lm = trained
    results, samples = harness_run(
        lm, None, ["hellaswag"], str(hellaswag_file), tmp_path, "hellaswag"
    )
    assert len(samples) == ITEMS
    first = samples[0]["arguments"][0]
    assert first[0] == "Roof shingle removal: A man is sitting on a roof. He"  # the stock prompt
    assert first[1] == " is using wrap to wrap a pair of skis."
    assert abs(results["acc,none"] - accuracy(ours, 0)) <= 0.01
    items = list(iter_items(hellaswag_file, ITEMS))
    assert abs(results["acc_norm,none"] - char_accuracy(ours, items)) <= 0.01  # ours: acc_char
    moved = 0
    for sample, (summed, _, _) in zip(samples, ours, strict=True):
        logprobs = torch.tensor([ll for ll, _ in sample["filtered_resps"]])
        chars = torch.tensor([len(choice) for choice in sample["doc"]["choices"]])
        per_char = int((logprobs / chars).argmax())
        assert sample["acc_norm"] == float(per_char == sample["doc"]["gold"])
        moved += int(logprobs.argmax()) != int(summed.argmin())
    assert moved <= ITEMS // 100  # items whose acc choice the prompt moved: 0 measured


def test_loglikelihood_rolling_is_the_texts_log_probability(trained):
    """A text longer than the context: each window of up to CONTEXT predicted tokens is
    scored after the CONTEXT tokens before its last one (the first after <|endoftext|>), and
    the total is the sum over the windows."""
    lm = trained
    text = "ROMEO: But soft, what light through yonder window breaks? " * 25
    tokens = lm.tok_encode(text)
    ids = [lm.eot_token_id, *tokens]
    assert len(tokens) > 2 * CONTEXT  # two full windows and a part
    expected, predicted = 0.0, 0
    while predicted < len(tokens):
        end = predicted + min(CONTEXT, len(tokens) - predicted)  # ids[end] is its last target
        begin = max(0, end - CONTEXT)
        with torch.no_grad():
            logits, _ = lm.model(torch.tensor([ids[begin:end]]))
        logprobs = F.log_softmax(logits[0].float(), dim=-1)
        picked = logprobs.gather(1, torch.tensor(ids[begin + 1 : end + 1])[:, None])
        expected += float(picked[predicted - end :].sum())
        predicted = end

    class Request:
        args = (text,)

    (total,) = lm.loglikelihood_rolling([Request()])
    assert math.isclose(total, expected, rel_tol=1e-4)


def test_generate_until_is_greedy_and_stops(trained):
    lm = trained
    ids = lm.tok_encode("ROMEO:")
    greedy = []
    for _ in range(8):
        with torch.no_grad():
            logits, _ = lm.model(torch.tensor([ids + greedy]))
        greedy.append(int(logits[0, -1].argmax()))
    full = lm.tok_decode(greedy)

    class Request:
        def __init__(self, kwargs):
            self.args = ("ROMEO:", kwargs)

    (plain,) = lm.generate_until([Request({"max_gen_toks": 8, "until": []})])
    assert plain == full
    stop = full.strip()[-1]  # a character greedy decoding reaches
    (cut,) = lm.generate_until([Request({"max_gen_toks": 8, "until": [stop]})])
    assert stop not in cut and full.startswith(cut)


def test_lm_eval_tasks_through_the_evaluate_stage(
    trained_run, shakespeare_tokens, hellaswag_file, tmp_path
):
    """The evaluate stage (what `llmforge stage evaluate` calls) with evaluate.lm_eval_tasks,
    on the shared small run (GPT-2 BPE, context 32): the harness's numbers land in eval.json
    and in the stage's summary line beside our scorer's, on the same 20 items."""
    settings = {
        "lm_eval_tasks": ["hellaswag"],
        "hellaswag_path": str(hellaswag_file),
        "hellaswag_limit": 20,
        "eval_tokens": 1024,
        "max_new_tokens": 4,
        "contamination": False,
        "precision": "fp32",
    }
    out = tmp_path / "eval"
    options = {"tokens": shakespeare_tokens}
    manifest = EVALUATE.command(_config(**settings), trained_run[0], out, options)
    saved = json.loads((out / "eval.json").read_text())
    harness = saved["lm_eval"]
    assert harness["version"] == "0.4.13"
    scores = harness["tasks"]["hellaswag"]
    assert scores["n"] == 20 == saved["hellaswag"]["n"]
    assert 0.0 <= scores["acc"] <= 1.0 and 0.0 <= scores["acc_norm"] <= 1.0
    # the file as the task reads it: resolved, so a symlinked ../shared names its target
    assert scores["acc_stderr"] > 0 and scores["data"] == str(hellaswag_file.resolve())
    summary = EVALUATE.describe(manifest["counts"]["extra"])
    assert "; hellaswag (20): acc " in summary and "; lm_eval hellaswag (20): acc " in summary


def _config(**evaluate) -> PipelineConfig:
    return PipelineConfig.model_validate({"evaluate": evaluate})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lm_eval_tasks": ["hellaswagg"]}, "no task 'hellaswagg'"),
        ({"lm_eval_tasks": ["hellaswag"]}, "set evaluate.hellaswag_path"),
        (
            {"lm_eval_tasks": ["hellaswag"], "hellaswag_path": "/nonexistent/hs.jsonl"},
            "/nonexistent/hs.jsonl: no such file",
        ),
        (
            {"lm_eval_tasks": ["mine"], "lm_eval_include": ["/nonexistent/tasks"]},
            "/nonexistent/tasks: no such folder",
        ),
    ],
)
def test_bad_task_or_data_is_one_line(settings, message):
    with pytest.raises(DataError, match=message) as caught:
        check_eval(_config(**settings))
    assert "\n" not in str(caught.value)


def test_missing_data_file_of_an_included_task_names_it(trained, tmp_path):
    lm = trained
    include = tmp_path / "tasks"
    include.mkdir()
    (include / "as_ours.yaml").write_text(AS_OURS.format(path=tmp_path / "gone.jsonl"))
    manager = task_manager([str(include)], ["hellaswag_as_llmforge"], tmp_path, None)
    with pytest.raises(DataError, match="lm_eval task 'hellaswag_as_llmforge'") as caught:
        evaluate_task(lm, manager, "hellaswag_as_llmforge", 5)
    assert "\n" not in str(caught.value)


def test_without_lm_eval_installed_the_error_says_how_to_install(monkeypatch):
    import sys

    import model
    from model.evaluate import load_harness

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` fails as if absent
    monkeypatch.delitem(sys.modules, "model.harness")
    monkeypatch.delattr(model, "harness")
    with pytest.raises(DataError, match=r"pip install 'llmforge\[eval\]'"):
        load_harness()


def test_eval_config_defaults_run_no_harness():
    assert EvalConfig().lm_eval_tasks == [] and EvalConfig().lm_eval_include == []
