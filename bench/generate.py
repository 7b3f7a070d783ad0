"""Sampling speed with and without the KV cache (model/sampling.py).

    python bench/generate.py                        # mini and gpt2-124m, 256 new tokens
    python bench/generate.py --presets tiny --new-tokens 8 --prompt-tokens 4   # a smoke run

For each preset a GPT with random init weights (seeded): speed does not depend on what the
weights are, and no download or training is needed. A prompt of --prompt-tokens random ids,
then --new-tokens sampled as `llmforge generate` does by default (temperature 0.8, top-k 200,
fp32), with the same seed twice:

- cache: model.sampling.generate_ids, prefill then one position per token (the window slides
  by re-prefilling its last 3/4 when full);
- no cache: the same loop recomputing the last context_length tokens every step, with the
  head on the last position only (GPT.next_logits): the ratio to it is the cache's alone;
- before: the computation of GPT.generate before the cache (`model(window)`: the whole window
  through the model and its 50,257-way head every step), with today's sampler.

Each is timed end to end (prefill included) after a 2-token warm-up, as tokens/s; speedups are
ratios to the cache in this run, on this machine and thread count. All modes must give the same
tokens while the whole sequence fits the window (`same`: checked on those first tokens). One
JSON line per preset on stdout, then a Markdown table. Batch-1 decoding reads every weight once
per token, so the cached rate follows the memory bandwidth left by other jobs; the uncached
modes are matmul-bound.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from model.config import PRESETS  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.hardware import hardware_name  # noqa: E402
from model.precision import resolve_device  # noqa: E402
from model.sampling import Sampling, generate_ids, next_token  # noqa: E402

SAMPLING = Sampling(temperature=0.8, top_k=200)  # `llmforge generate`'s defaults (nanoGPT's)


MODES = ("cache", "no_cache", "before")


@torch.no_grad()
def generate_before(
    model: GPT, idx: torch.Tensor, new_tokens: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """GPT.generate before the KV cache: logits of the whole window, every step."""
    for _ in range(new_tokens):
        logits, _ = model(idx[:, -model.cfg.context_length :])
        token = next_token(logits[:, -1, :], SAMPLING, generator)
        yield token
        idx = torch.cat((idx, token.unsqueeze(1)), dim=1)


def timed_tokens(
    model: GPT, prompt: torch.Tensor, new_tokens: int, seed: int, mode: str
) -> tuple[list[int], float]:
    """The sampled ids and the seconds they took (prefill included)."""
    generator = torch.Generator(device=prompt.device).manual_seed(seed)
    sync = torch.cuda.synchronize if prompt.device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    if mode == "before":
        ids = generate_before(model, prompt, new_tokens, generator)
    else:
        use_cache = mode == "cache"
        ids = generate_ids(model, prompt, new_tokens, SAMPLING, generator, use_cache)
    tokens = [int(t) for t in ids]
    sync()
    return tokens, time.perf_counter() - started


def run_preset(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cfg = PRESETS[name]
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, args.prompt_tokens), generator=torch.Generator())
    prompt = ids.to(device)
    result: dict[str, Any] = {
        "preset": name,
        "params_m": round(model.num_params() / 1e6, 1),
        "context_length": cfg.context_length,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
    }
    tokens = {}
    for mode in args.modes:
        timed_tokens(model, prompt, 2, args.seed, mode)  # warm-up: allocations, kernels
        tokens[mode], seconds = timed_tokens(model, prompt, args.new_tokens, args.seed, mode)
        result[f"{mode}_s"] = round(seconds, 3)
        result[f"{mode}_tokens_per_s"] = round(args.new_tokens / seconds, 2)
    in_window = max(0, min(args.new_tokens, cfg.context_length - args.prompt_tokens + 1))
    result["same_tokens_checked"] = in_window
    result["same"] = all(t[:in_window] == tokens["cache"][:in_window] for t in tokens.values())
    for mode in args.modes[1:]:
        result[f"speedup_vs_{mode}"] = round(result[f"{mode}_s"] / result["cache_s"], 2)
    return result


def markdown(results: list[dict[str, Any]], modes: list[str]) -> str:
    labels = {"cache": "cache", "no_cache": "no cache", "before": "GPT.generate before"}
    rates = " | ".join(f"{labels[m]} tokens/s" for m in modes)
    ratios = " | ".join(f"speedup vs {labels[m]}" for m in modes[1:])
    header = f"| preset | params | context | new tokens | {rates} | {ratios} | same tokens |"
    lines = [header, "|---|" + "---:|" * (3 + 2 * len(modes) - 1) + "---|"]
    for r in results:
        same = f"{'yes' if r['same'] else 'NO'} (first {r['same_tokens_checked']})"
        cells = [f"{r[f'{m}_tokens_per_s']:.1f}" for m in modes]
        cells += [f"{r[f'speedup_vs_{m}']:.1f}x" for m in modes[1:]]
        lines.append(
            f"| {r['preset']} | {r['params_m']}M | {r['context_length']} | {r['new_tokens']} "
            f"| {' | '.join(cells)} | {same} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="mini,gpt2-124m", help=f"out of {','.join(PRESETS)}")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--modes", default=",".join(MODES), help="cache first, then baselines")
    args = p.parse_args(argv)
    args.modes = args.modes.split(",")
    if args.modes[0] != "cache" or not set(args.modes) <= set(MODES) or len(args.modes) < 2:
        p.error(f"--modes: cache, then one or more of {', '.join(MODES[1:])}")
    unknown = [n for n in args.presets.split(",") if n not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    if args.new_tokens < 1 or args.prompt_tokens < 1:
        p.error("--new-tokens and --prompt-tokens must be >= 1")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    threads = torch.get_num_threads()
    print(f"# {hardware_name(device)}, {threads} threads, torch {torch.__version__}", flush=True)
    results = []
    for name in args.presets.split(","):
        result = run_preset(name, args, device) | {"device": str(device)}
        print(json.dumps(result), flush=True)
        results.append(result)
    print()
    print(markdown(results, args.modes))
    return results


if __name__ == "__main__":
    main()
