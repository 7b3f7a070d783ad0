"""Sampling (model/sampling.py): the KV cache gives the uncached tokens for every architecture,
greedy is deterministic, top-k/top-p masks, end-of-text stops, streamed UTF-8, transformers'
greedy continuation of our export equals ours."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

# transformers reads this at import: it must never reach the network in tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from model.chat import Chat  # noqa: E402
from model.checkpoint import save_checkpoint  # noqa: E402
from model.config import ModelConfig, modern_config  # noqa: E402
from model.data import get_encoding  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.sampling import (  # noqa: E402
    WINDOW_KEEP,
    KVCache,
    Sampling,
    TextDecoder,
    TextStream,
    candidates,
    generate_ids,
    load_for_sampling,
    next_token,
)
from pipeline.errors import DataError  # noqa: E402
from pipeline.tokenize import bpe  # noqa: E402

T = 32  # context length of the test models
GPT2_STYLE = ModelConfig(
    vocab_size=300, context_length=T, d_model=32, n_heads=2, n_layers=2, bias=True,
    positional="learned", tie_embeddings=True,
)  # fmt: skip
SINUSOIDAL = ModelConfig(vocab_size=300, context_length=T, d_model=32, n_heads=2, n_layers=2)
MODERN = modern_config(depth=2, vocab_size=300, context_length=T)  # rope, rmsnorm, qk_norm, relu2
FAMILIES = {
    "gpt2": GPT2_STYLE,
    "sinusoidal": SINUSOIDAL,
    "modern": MODERN,
    "modern-swiglu": dataclasses.replace(MODERN, mlp="swiglu"),
}


def random_model(cfg: ModelConfig, seed: int = 0) -> GPT:
    """Every parameter random: nanochat's init zeroes the output projections, which would
    make every block the identity and hide a wrong cache."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.3 + (1.0 if param.dim() == 1 else 0.0))
    return model.eval()


def sample(model, prompt, n, sampling, seed=0, use_cache=True) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    idx = torch.tensor([prompt])
    return [int(t) for t in generate_ids(model, idx, n, sampling, generator, use_cache)]


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_logits_equal_a_full_forward_prefill_decode_and_chunks(family):
    model = random_model(FAMILIES[family])
    idx = torch.randint(0, 300, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(idx)  # (B, T, V)
        cache = KVCache.for_model(model)
        assert torch.allclose(model.next_logits(idx[:, :5], cache), full[:, 4], atol=1e-4)
        # A chunk after cached positions needs the offset causal mask (past > 0, T > 1).
        chunk = model.lm_head(model.hidden_states(idx[:, 5:9], cache))[..., :300]
        assert torch.allclose(chunk, full[:, 5:9], atol=1e-4)
        for t in range(9, T):  # then one position per token
            step = model.next_logits(idx[:, t : t + 1], cache)
            assert torch.allclose(step, full[:, t], atol=1e-4)
        assert cache.length == T
        with pytest.raises(ValueError, match="32 cached \\+ 1 new tokens > context_length"):
            model.next_logits(idx[:, :1], cache)


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_and_uncached_sampling_give_the_same_tokens_for_the_same_seed(family):
    model = random_model(FAMILIES[family])
    prompt = [5, 17, 42, 7, 99]
    n = T - len(prompt) + 1  # the last token is sampled from a full window
    for sampling in (Sampling(1.0), Sampling(0.9, top_k=20, top_p=0.9), Sampling(0)):
        cached = sample(model, prompt, n, sampling, seed=3)
        assert cached == sample(model, prompt, n, sampling, seed=3, use_cache=False)
    assert len(set(sample(model, prompt, n, Sampling(1.0), seed=4))) > 5  # it does sample


def test_the_window_slides_past_the_context_length():
    """Identical up to the window's end; then the cache keeps WINDOW_KEEP of it."""
    model = random_model(FAMILIES["gpt2"])  # learned positions: no row past T exists
    prompt = [1, 2, 3]
    n = 3 * T
    cached = sample(model, prompt, n, Sampling(0))
    uncached = sample(model, prompt, n, Sampling(0), use_cache=False)
    in_window = T - len(prompt) + 1
    assert len(cached) == n and cached[:in_window] == uncached[:in_window]
    # The first token after the slide is the greedy choice after the last WINDOW_KEEP*T.
    seen = (prompt + cached)[: len(prompt) + in_window]
    with torch.no_grad():
        expected = model.next_logits(torch.tensor([seen[-int(T * WINDOW_KEEP) :]]))
    assert cached[in_window] == int(expected.argmax())


def test_greedy_is_deterministic_and_the_argmax():
    model = random_model(MODERN)
    prompt = [3, 1, 4, 1, 5]
    a = sample(model, prompt, 12, Sampling(0), seed=1)
    assert a == sample(model, prompt, 12, Sampling(0), seed=2)  # no randomness at all
    assert a == sample(model, prompt, 12, Sampling(1.0, top_k=1), seed=9)
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(12):
            tokens.append(int(model(torch.tensor([tokens]))[0][0, -1].argmax()))
    assert tokens[len(prompt) :] == a


def test_gpt_generate_is_the_sampler_with_its_cache():
    """GPT.generate (evaluate's samples) is generate_ids: the prompt, then the same tokens."""
    model = random_model(SINUSOIDAL)
    idx = torch.tensor([[4, 8, 15], [16, 23, 42]])
    out = model.generate(idx, 20, 0.8, 50, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    tokens = list(generate_ids(model, idx, 20, Sampling(0.8, top_k=50), generator, False))
    assert out.shape == (2, 23) and torch.equal(out[:, :3], idx)
    assert torch.equal(out[:, 3:], torch.stack(tokens, dim=1))


def kept(logits: torch.Tensor, **options) -> set[int]:
    values, ids = candidates(logits, **options)
    ids = torch.arange(logits.size(-1)).expand_as(logits) if ids is None else ids
    return set(ids[torch.isfinite(values)].tolist())


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert kept(logits, top_k=2) == {0, 1}
    # (p between the cumulative sums 0.5, 0.8, 0.95: fp32 sums land either side of them)
    assert kept(logits, top_p=0.75) == {0, 1}  # 0.5 + 0.3 reaches 0.75
    assert kept(logits, top_p=0.85) == {0, 1, 2}
    assert kept(logits, top_p=0.1) == {0}  # the top token always stays
    assert kept(logits, top_p=1.0) == kept(logits) == {0, 1, 2, 3}
    assert kept(logits, top_k=3, top_p=0.6) == {0, 1}  # top-p within the renormalized top 3
    shuffled = logits[:, [2, 0, 3, 1]]  # the tokens are kept, not the positions
    assert kept(shuffled, top_p=0.75) == kept(shuffled, top_k=2) == {1, 3}
    for sampling in (Sampling(1.0, top_p=0.75), Sampling(1.0, top_k=2)):
        drawn = next_token(shuffled.expand(500, 4), sampling, torch.Generator().manual_seed(0))
        assert set(drawn.tolist()) == {1, 3}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(temperature=float("nan")), "temperature must be >= 0"),
        (dict(top_k=0), "top_k must be >= 1"),
        (dict(top_p=0.0), "top_p must be in"),
        (dict(top_p=1.5), "top_p must be in"),
    ],
)
def test_bad_sampling_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        Sampling(**kwargs)


def scripted(model: GPT, script: list[int]) -> GPT:
    """The model's next_logits replaced by one that picks the script's tokens in turn."""
    steps = iter(script)

    def next_logits(idx, cache=None, head=None):
        logits = torch.zeros(idx.size(0), model.cfg.vocab_size)
        logits[:, next(steps)] = 100.0
        return logits

    model.next_logits = next_logits
    return model


def test_streams_split_characters_once_whole_and_stops_at_end_of_text():
    enc = get_encoding("gpt2")
    text = "Grüße, 日本語のテキスト 🚀🚀!"
    ids = enc.encode_ordinary(text)
    split = [t for t in ids if not _is_utf8(enc.decode_single_token_bytes(t))]
    assert split  # GPT-2's byte-level BPE cuts some of these characters across tokens
    model = scripted(random_model(dataclasses.replace(SINUSOIDAL, vocab_size=50257)),
                     [*ids, enc.eot_token, *ids])  # fmt: skip
    stream = TextStream(model, enc, [enc.eot_token], 100, Sampling(1.0), seed=0)
    pieces = list(stream)
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert stream.tokens == ids and stream.stopped_at_eot
    assert "stopped at end-of-text" in stream.summary()
    decoder = TextDecoder(enc)  # a character never completed ends as U+FFFD, as tiktoken's
    alone = decoder.feed(split[0]) + decoder.flush()
    assert alone == enc.decode_single_token_bytes(split[0]).decode("utf-8", errors="replace")
    assert alone.endswith("\ufffd")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.fixture(scope="module")
def bpe_checkpoint(tmp_path_factory):
    """A checkpoint carrying a 320-token BPE trained here (a tokenizer as tokenize trains it)."""
    texts = ["Grüße aus Köln. 日本語のテキスト. The cat sat on the mat."] * 20
    spec = bpe.train_spec(texts, 320)
    encoding = bpe.encoding_from_spec(spec)
    model = random_model(dataclasses.replace(MODERN, vocab_size=encoding.n_vocab))
    path = tmp_path_factory.mktemp("bpe") / "checkpoint.pt"
    state = {
        "model": model.state_dict(),
        "model_config": model.cfg.to_dict(),
        "tokenizer": bpe.tokenizer_name(spec),
        "tokenizer_spec": spec,
    }
    return save_checkpoint(path, state)


def test_a_trained_tokenizer_checkpoint_samples_the_same_with_and_without_the_cache(
    bpe_checkpoint,
):
    model, enc = load_for_sampling(bpe_checkpoint, "cpu")
    assert enc.name.startswith("bpe-") and enc.eot_token == model.cfg.vocab_size - 1
    prompt = enc.encode_ordinary("Grüße aus")
    n = T - len(prompt) + 1
    streams = [
        TextStream(model, enc, prompt, n, Sampling(1.0, top_p=0.95), seed=7, use_cache=cached)
        for cached in (True, False)
    ]
    texts = ["".join(stream) for stream in streams]
    assert texts[0] == texts[1] and streams[0].tokens == streams[1].tokens
    assert texts[0] == enc.decode(streams[0].tokens)


def test_chat_keeps_history_in_the_window_and_drops_the_oldest():
    enc = get_encoding("gpt2")
    model = random_model(dataclasses.replace(SINUSOIDAL, vocab_size=50257))
    reply = enc.encode_ordinary(" fine thanks\nmore")
    scripted(model, reply * 10)
    chat = Chat(model, enc, Sampling(0), max_new_tokens=8, seed=0)
    assert "".join(chat.reply("how are you?")) == " fine thanks"  # one line: stops at "\n"
    first = enc.encode_ordinary("how are you?\n") + enc.encode_ordinary(" fine thanks\n")
    assert chat.exchanges == [first]
    user = enc.encode_ordinary("and you?\n")
    assert chat.prompt_for(user) == first + user
    long = list(range(100, 100 + T))  # longer than the budget (T - 8): only its end stays
    assert chat.prompt_for(long) == long[-(T - 8) :]
    for _ in range(3):
        list(chat.reply("and you?"))
    prompt = chat.prompt_for(user)
    assert len(prompt) <= T - 8 and prompt[-len(user) :] == user
    assert prompt[: len(first)] != first  # the oldest exchange went first


HF_CASES = {
    "gpt2": dataclasses.replace(GPT2_STYLE, vocab_size=50257),
    "sinusoidal": dataclasses.replace(SINUSOIDAL, vocab_size=50257),
    "modern": dataclasses.replace(MODERN, vocab_size=50257),
}


@pytest.mark.parametrize("family", HF_CASES)
def test_transformers_pipeline_greedy_continuation_equals_ours(family, tmp_path):
    from transformers import pipeline

    from model.export import export

    model = random_model(HF_CASES[family])
    if family == "gpt2":  # a tied head repeats its input token unless positions weigh more
        with torch.no_grad():
            model.pos_emb.weight.mul_(10)
    ckpt = save_checkpoint(
        tmp_path / "checkpoint.pt",
        {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "tokenizer": "gpt2"},
    )
    export(ckpt, tmp_path / "hf", "hf")
    ours, enc = load_for_sampling(ckpt, "cpu")
    prompt = "The cat sat on the"
    ids = enc.encode_ordinary(prompt)
    stream = TextStream(ours, enc, ids, T - len(ids), Sampling(0))
    text = "".join(stream)
    assert len(set(stream.tokens)) > 5  # not one token repeated: positions and cache matter
    generate = pipeline("text-generation", model=str(tmp_path / "hf"), device="cpu")
    options = dict(max_new_tokens=T - len(ids), do_sample=False)
    hf_ids = generate(prompt, return_tensors=True, **options)[0]["generated_token_ids"]
    eot = [enc.eot_token] if stream.stopped_at_eot else []  # transformers keeps its eos
    assert [int(t) for t in hf_ids][len(ids) :] == stream.tokens + eot
    if "\ufffd" not in text:  # lone bytes: Rust and Python may count U+FFFD differently
        assert generate(prompt, return_full_text=False, **options)[0]["generated_text"] == text
