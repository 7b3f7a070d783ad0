"""Sampling from a GPT: a KV cache per layer, temperature / top-k / top-p, streamed text.

    from model.sampling import Sampling, TextStream, load_for_sampling, prompt_ids
    model, encoding = load_for_sampling(Path("runs/x/checkpoint.pt"))
    stream = TextStream(model, encoding, prompt_ids(encoding, "ROMEO:"), 64, Sampling(0.8))
    for piece in stream:
        print(piece, end="", flush=True)

Prefill, then decode: the prompt goes through the model once, leaving each layer's keys and
values (B, nh, T, hs) in its `LayerCache`; every later step feeds only the newest token, at
position cache.length, so a token costs one position instead of the whole window.

The window. Positions end at context_length T (learned and sinusoidal tables have T rows; rotary
models never saw a later angle in training). When the cache is full it is emptied and the last
WINDOW_KEEP·T tokens are prefilled again: one forward of 3T/4 positions per T/4 new tokens (3
positions per token more, in one batched matmul), and every token still sees at least 3T/4
tokens of context. Without a cache (use_cache=False, the reference) every step runs the last T
tokens. Until the first slide both give the same tokens for the same seed (tested); after it
they may differ, since the cached model then sees a shorter context.

Text streams as it comes: a character whose UTF-8 bytes are split across tokens (GPT-2's
byte-level BPE splits many CJK characters and emoji) is printed once its last byte arrives.
"""

from __future__ import annotations

import codecs
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from pipeline.errors import DataError

if TYPE_CHECKING:
    from model.gpt import GPT

# Share of the window kept (and prefilled again) when the cache is full: see the module
# docstring for the cost (3 extra positions per token at 0.75) against the context kept.
WINDOW_KEEP = 0.75


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen from the logits, in this order: temperature, top-k, top-p.

    temperature 0 is greedy decoding (argmax; ties go to the lowest id, as transformers'
    greedy search). top_k keeps the k most likely tokens (Fan et al. 2018); top_p keeps the
    smallest set of most likely tokens whose probability reaches p ("nucleus sampling",
    Holtzman et al. 2020). None (or p = 1) keeps all.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # also refuses nan
            raise DataError(f"temperature must be >= 0 (0: greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise DataError(f"top_k must be >= 1 (or None for all tokens), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise DataError(f"top_p must be in (0, 1], got {self.top_p}")


def candidates(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tokens top-k and top-p leave to draw from: logits (B, k) and their ids (B, k),
    most likely first, -inf where top-p drops one; without top-k all logits (B, V) and None.

    Top-k is torch.topk: exactly k, so a step samples among k tokens rather than softmaxing
    and drawing over all 50,257 (mini: ~1 of 9 ms per token on 1 thread). Top-p keeps a
    token while the probability of those ranked above it is below p: the most likely token
    always stays, and the kept set is the smallest whose mass reaches p.
    """
    ids = None
    if top_k is not None and top_k < logits.size(-1):
        logits, ids = torch.topk(logits, top_k)  # sorted, most likely first
    if top_p is not None and top_p < 1:
        ranked, order = (logits, None) if ids is not None else logits.sort(-1, descending=True)
        probs = ranked.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # mass ranked above each token
        if order is not None:
            drop = torch.zeros_like(drop).scatter(-1, order, drop)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits, ids


def next_token(
    logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token id per row (B,) drawn from logits (B, V) as `sampling` says."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / sampling.temperature
    kept, ids = candidates(scaled, sampling.top_k, sampling.top_p)
    choice = torch.multinomial(F.softmax(kept, dim=-1), num_samples=1, generator=generator)
    return (choice if ids is None else ids.gather(-1, choice)).squeeze(-1)


class LayerCache:
    """One attention layer's keys and values, (B, nh, capacity, hs) each, filled left to
    right; allocated at the first append, with that call's batch, dtype and device."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) after the cached ones; return all of them so far."""
        B, nh, T, hs = k.shape
        end = self.length + T
        if end > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions: cannot add {T} more")
        if self.keys is None:
            self.keys = k.new_empty(B, nh, self.capacity, hs)
            self.values = v.new_empty(B, nh, self.capacity, hs)
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """A LayerCache per block; `length` is the number of positions the model has seen."""

    def __init__(self, n_layers: int, capacity: int):
        self.layers = [LayerCache(capacity) for _ in range(n_layers)]

    @classmethod
    def for_model(cls, model: GPT) -> KVCache:
        return cls(model.cfg.n_layers, model.cfg.context_length)

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def clear(self) -> None:
        """Forget every position; the buffers stay allocated for the next prefill."""
        for layer in self.layers:
            layer.length = 0


def decode_head(model: GPT) -> torch.Tensor:
    """The lm_head weight as one contiguous (d, V) matrix, padding rows cut. A batch-1 step
    reads the whole head (mini: 58 MB fp32), which no cache holds; x @ (d, V) streams it at
    memory speed, the (V, d) layout nn.Linear keeps does not: mini's head 2.2 ms against
    8.2 ms, GPT-2's 5.9 against 10.4 (1 thread, 2-core EPYC, load ~4; the body's small
    matrices are the same either way). Built once per generation: the model may train on."""
    return model.lm_head.weight[: model.cfg.vocab_size].t().contiguous()


@torch.no_grad()
def generate_ids(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampling: Sampling | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """The max_new_tokens tokens after idx (B, T >= 1), one (B,) tensor at a time.

    The model should be in eval mode (dropout off), as model.checkpoint.load_model returns
    it. use_cache=False recomputes the last context_length tokens every step (the reference
    the cache is tested and benchmarked against).
    """
    if idx.size(1) < 1:
        raise ValueError("generate_ids needs at least one prompt token")
    sampling = sampling or Sampling()
    T = model.cfg.context_length
    keep = max(1, int(T * WINDOW_KEEP))
    cache = KVCache.for_model(model) if use_cache else None
    head = decode_head(model) if max_new_tokens > 0 else None
    tokens = idx[:, -T:]  # the window: at most T tokens
    pending = tokens  # tokens the cache has not seen yet
    for _ in range(max_new_tokens):
        if cache is None:
            logits = model.next_logits(tokens, head=head)
        else:
            if cache.length + pending.size(1) > T:  # the window is full: slide it
                cache.clear()
                pending = tokens[:, -keep:]
            logits = model.next_logits(pending, cache, head)
        token = next_token(logits, sampling, generator)
        yield token
        pending = token.unsqueeze(1)  # (B, 1)
        tokens = torch.cat([tokens, pending], dim=1)[:, -T:]


class TextDecoder:
    """Token ids to text as they come. UTF-8 bytes of a character split across tokens wait
    for the rest; bytes that never form a character become U+FFFD, as tiktoken's decode
    (errors="replace") gives them."""

    def __init__(self, encoding: Any):
        self.encoding = encoding
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self._utf8.decode(self.encoding.decode_single_token_bytes(token))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def prompt_ids(encoding: Any, text: str) -> list[int]:
    """The prompt's tokens (special-token strings stay text); an empty prompt is one
    end-of-text token, the boundary every training document starts after."""
    return encoding.encode_ordinary(text) or [encoding.eot_token]


def seeded_generator(seed: int | None, device: torch.device | str) -> tuple[torch.Generator, int]:
    """A generator on `device` seeded with `seed`, or with a fresh random seed (returned, so a
    sample can be reproduced)."""
    seed = secrets.randbits(63) if seed is None else int(seed)
    return torch.Generator(device=device).manual_seed(seed), seed


class TextStream:
    """Iterate for the text of up to max_new_tokens sampled tokens, piece by piece; stops
    before end-of-text. Afterwards: `tokens` (ids, eot excluded), `stopped_at_eot`,
    `seconds` (prefill included) and `seed`."""

    def __init__(
        self,
        model: GPT,
        encoding: Any,
        prompt: list[int],
        max_new_tokens: int,
        sampling: Sampling | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ):
        self.model, self.encoding, self.prompt = model, encoding, prompt
        self.max_new_tokens, self.use_cache = max_new_tokens, use_cache
        self.sampling = sampling or Sampling()
        device = model.lm_head.weight.device
        if generator is None:
            generator, seed = seeded_generator(seed, device)
        self.generator, self.seed = generator, seed
        self.tokens: list[int] = []
        self.stopped_at_eot = False
        self.seconds = 0.0

    def __iter__(self) -> Iterator[str]:
        device = self.model.lm_head.weight.device
        idx = torch.tensor([self.prompt], dtype=torch.long, device=device)
        decoder = TextDecoder(self.encoding)
        started = time.perf_counter()
        ids = generate_ids(
            self.model, idx, self.max_new_tokens, self.sampling, self.generator, self.use_cache
        )
        try:
            for token in ids:
                token = int(token)
                if token == self.encoding.eot_token:
                    self.stopped_at_eot = True
                    break
                self.tokens.append(token)
                if piece := decoder.feed(token):
                    yield piece
            if tail := decoder.flush():
                yield tail
        finally:
            ids.close()
            self.seconds = time.perf_counter() - started

    def summary(self) -> str:
        """One line: tokens, speed, why it stopped, the seed."""
        rate = len(self.tokens) / self.seconds if self.seconds else 0.0
        why = "end-of-text" if self.stopped_at_eot else f"max {self.max_new_tokens} new tokens"
        return (
            f"{len(self.tokens)} tokens in {self.seconds:.2f} s ({rate:.1f} tokens/s), "
            f"stopped at {why}, seed {self.seed}"
        )


def load_for_sampling(
    checkpoint: Path | str, device: str = "auto", threads: int | None = None
) -> tuple[GPT, Any]:
    """A checkpoint's model (eval mode) on `device` (auto: cuda, mps, else cpu) and the
    tokenizer it was trained with (GPT-2, or its trained BPE from the checkpoint itself).

    threads: torch's intra-op CPU threads (None: torch's default, one per core). Decoding
    runs many small matmuls; on an oversubscribed CPU every one waits for its slowest
    thread: mini decoded 16x slower on 2 threads than on 1 (2-core EPYC at load ~7.5).
    """
    from model.checkpoint import load_model
    from model.data import checkpoint_encoding
    from model.precision import resolve_device

    if threads is not None:
        if threads < 1:
            raise DataError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    model, state = load_model(checkpoint, resolve_device(device))
    return model, checkpoint_encoding(state)
