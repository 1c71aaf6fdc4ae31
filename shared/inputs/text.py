"""Checks of user text, on the server: the one place text input is cleaned and split.

    text = clean_text(raw)                      # UserError when empty, too long, or not text
    sentences = split_sentences(text)           # lines, then sentences: what a model translates one by one

Control characters (except line breaks and tabs) and invisible format characters are removed
(NFC-normalised first), since tokenizers read them as unknown tokens or, worse, as nothing.
"""

from __future__ import annotations

import re
import unicodedata

from shared.errors import UserError

MAX_CHARACTERS = 5_000
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def clean_text(text, max_characters: int = MAX_CHARACTERS) -> str:
    if text is None:
        raise UserError("No text given: type or paste some text.")
    if not isinstance(text, str):
        raise UserError(f"Text must be a string, not {type(text).__name__}.")
    if len(text) > max_characters:
        raise UserError(f"The text has {len(text):,} characters; the limit is {max_characters:,}. "
                        "Split it into smaller parts.")
    text = unicodedata.normalize("NFC", text)
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co"))
    text = text.replace("\t", " ").strip()
    if not text:
        raise UserError("The text is empty (or only spaces and control characters): type something to translate.")
    return text


def split_sentences(text: str) -> list[str]:
    """Non-empty lines, each split after sentence-ending punctuation."""
    return [part.strip() for line in text.splitlines() for part in _SENTENCE_END.split(line) if part.strip()]


def split_long(sentence: str, count_tokens, max_tokens: int) -> list[str]:
    """`sentence` in pieces of at most `max_tokens` tokens each: whole words where they fit, and a
    single word longer than that in pieces of characters (so nothing is cut off)."""
    pieces: list[str] = []
    for word in sentence.split():
        if pieces and count_tokens(f"{pieces[-1]} {word}") <= max_tokens:
            pieces[-1] = f"{pieces[-1]} {word}"
        elif count_tokens(word) <= max_tokens:
            pieces.append(word)
        else:
            pieces += _split_word(word, count_tokens, max_tokens)
    return pieces


def _split_word(word: str, count_tokens, max_tokens: int) -> list[str]:
    """The longest prefixes that fit, found by bisection, one after another."""
    pieces = []
    while word:
        low, high = 1, len(word)  # the longest fitting prefix length lies in [low, high]
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if count_tokens(word[:middle]) <= max_tokens else (low, middle - 1)
        pieces.append(word[:low])
        word = word[low:]
    return pieces
