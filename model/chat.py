"""A conversation with a trained model: one line in, one line out, history in the window.

    chat = Chat(model, encoding, Sampling(0.8, top_k=200), max_new_tokens=128, seed=1)
    for piece in chat.reply("Where is Romeo?"):
        print(piece, end="", flush=True)

The models here are pretrained on web text, with no chat template or tuning on dialogues, so
the conversation is a plain transcript the model continues: each user line and each reply is a
line of text. A reply streams until end-of-text, its first newline after some text (leading
newlines are skipped), or max_new_tokens.

History: every exchange (the user's line and the reply, as tokens) is kept while the prompt
fits in the context window with room for a reply (max_new_tokens, at most half the window);
the oldest exchanges are dropped first, and a single line longer than that keeps its end.
One generator, seeded once, serves the whole conversation: the same seed and lines give the
same replies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from model.sampling import Sampling, TextStream, seeded_generator

if TYPE_CHECKING:
    from model.gpt import GPT


class Chat:
    def __init__(
        self,
        model: GPT,
        encoding: Any,
        sampling: Sampling | None = None,
        max_new_tokens: int = 128,
        seed: int | None = None,
    ):
        self.model, self.encoding, self.max_new_tokens = model, encoding, max_new_tokens
        self.sampling = sampling or Sampling()
        self.generator, self.seed = seeded_generator(seed, model.lm_head.weight.device)
        self.exchanges: list[list[int]] = []  # oldest first: user line + reply, as tokens
        T = model.cfg.context_length
        self.prompt_budget = T - min(max_new_tokens, T // 2)

    def prompt_for(self, user: list[int]) -> list[int]:
        """The newest exchanges that fit in the budget with the user's tokens, then those."""
        user = user[-self.prompt_budget :]
        kept: list[int] = []
        for exchange in reversed(self.exchanges):
            if len(kept) + len(exchange) + len(user) > self.prompt_budget:
                break
            kept = exchange + kept
        return kept + user

    def reply(self, line: str) -> Iterator[str]:
        """The reply to one user line, piece by piece; the exchange joins the history."""
        user = self.encoding.encode_ordinary(line.rstrip("\n") + "\n")
        stream = TextStream(
            self.model,
            self.encoding,
            self.prompt_for(user),
            self.max_new_tokens,
            self.sampling,
            generator=self.generator,
        )
        text = ""
        pieces = iter(stream)
        try:
            for piece in pieces:
                if not text:
                    piece = piece.lstrip("\n")
                head, newline, _ = piece.partition("\n")
                if head:
                    text += head
                    yield head
                if newline:
                    break
        finally:
            pieces.close()
            self.exchanges.append(user + self.encoding.encode_ordinary(text + "\n"))
