"""Language identification with py3langid (its model ships inside the wheel: no download).

    detect_language("The quick brown fox jumps over the lazy dog.")  # ("en", 0.99)

Scores are normalized probabilities (a softmax over py3langid's languages), so a threshold
such as FineWeb's 0.65 for English (see REFERENCE.md) can be applied to them.
"""

from __future__ import annotations

import functools

from py3langid.langid import MODEL_FILE, LanguageIdentifier

UNKNOWN = "und"  # ISO 639-2 "undetermined": no letters to judge by


@functools.cache
def _identifier() -> tuple[LanguageIdentifier, float]:
    """The model, loaded once per process (~1 s), and the score it gives featureless text."""
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return identifier, identifier.classify("")[1]


def detect_language(text: str) -> tuple[str, float]:
    """ISO 639-1 code and its probability (0..1); ("und", 0.0) when nothing can be judged."""
    if not any(ch.isalpha() for ch in text):
        return UNKNOWN, 0.0
    identifier, featureless = _identifier()
    language, score = identifier.classify(text)
    # Text without any known n-gram gets the uniform distribution: not a decision.
    if score <= featureless + 1e-6:
        return UNKNOWN, 0.0
    return language, float(score)
