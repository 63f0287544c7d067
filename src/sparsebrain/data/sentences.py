"""English sentences for sentence-embedding tasks, cut from the offline corpora of :mod:`sparsebrain.data.text`.

A corpus (``"bbc_news"``, ``"shakespeare"``, ``"shakespeare+bbc"``) is split into train and validation documents by
the same fixed rule as the language-modelling data (document ``i`` of a source is held out iff ``i % 20 == 0``),
then every document is cut into sentences by a simple rule:

1. paragraphs are separated by blank lines; inside one, line breaks (Shakespeare's verse) become spaces;
2. a sentence ends at ``.``, ``!`` or ``?`` (and any closing quotes or bracket) followed by whitespace and a capital
   letter (possibly after an opening quote), except after the abbreviations ``Mr``, ``Mrs``, ``Ms``, ``Dr``, ``St``
   and single-letter initials;
3. a sentence is kept if it has ``min_words`` to ``max_words`` words (5 to 64 by default), ends with ``.``, ``!`` or
   ``?`` (which drops headlines and speaker names) and holds no square bracket (Shakespeare's stage directions).

Duplicates are removed (first occurrence kept), and a training sentence that also occurs in validation is dropped
from training, so the held-out sentences are never trained on. Your own sentences can come from a text file, one
sentence per line (``corpus="file", path=...``): lines are held out by the same index rule, and the word-count
filter and the deduplication apply; the sentence-end rule does not.

Example:
    >>> train, valid = load_sentences("bbc_news")
    >>> len(train), len(valid), valid[0][:40]
    (35074, 2050, 'Quarterly profits at US media giant Time')
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from .._validation import check_positive_int, unknown_name_error
from .text import CORPORA, VALID_EVERY, split_documents

__all__ = [
    "FILE_CORPUS",
    "MAX_WORDS",
    "MIN_WORDS",
    "keep_sentence",
    "load_sentences",
    "read_sentence_file",
    "sentence_corpora",
    "split_sentences",
]

FILE_CORPUS = "file"  # corpus name meaning "the text file at `path`, one sentence per line"
MIN_WORDS = 5  # shorter "sentences" are mostly fragments: speaker names, "Yes, my lord."...
MAX_WORDS = 64  # longer ones are mostly run-ons from a missed boundary; 64 words fit in about 90 WordPiece tokens

_PARAGRAPH = re.compile(r"\n\s*\n")
# The boundary: sentence punctuation (plus closing quotes / bracket) that is not the dot of a title or an initial,
# then whitespace, then a capital letter, possibly after an opening quote or bracket. Python's lookbehinds must have
# a fixed width, hence one per abbreviation.
_BOUNDARY = re.compile(
    r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\b[A-Z])"
    r"([.!?][\"'”’)]*)\s+(?=[\"'“‘(]?[A-Z])"
)
_ENDS_SENTENCE = re.compile(r"[.!?][\"'”’)]*$")


def split_sentences(text: str) -> list[str]:
    """Cuts running text into sentences by the rule of the module docstring (no filtering).

    Example:
        >>> split_sentences("Mr. Brown met J. Smith. They talked!\\nThen\\nthey left.  'Why?' he asked.\\n\\nThe end")
        ['Mr. Brown met J. Smith.', 'They talked!', 'Then they left.', "'Why?' he asked.", 'The end']
    """
    out = []
    for paragraph in _PARAGRAPH.split(text):
        flat = " ".join(paragraph.split())  # (T,) one line, single spaces
        if flat:
            out += [s for s in _BOUNDARY.sub("\\1\n", flat).split("\n") if s]
    return out


def keep_sentence(sentence: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> bool:
    """Whether a sentence cut from running text is kept: ``min_words..max_words`` words, a final ``.``, ``!`` or
    ``?``, no square bracket.

    Example:
        >>> keep_sentence("The firm said it expects growth."), keep_sentence("Ad sales boost Time Warner profit")
        (True, False)
    """
    n = len(sentence.split())
    return (
        min_words <= n <= max_words
        and bool(_ENDS_SENTENCE.search(sentence))
        and not ("[" in sentence or "]" in sentence)
    )


def _unique(sentences: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """First occurrences, in order, of the sentences not in ``exclude``."""
    seen = set(exclude)
    out = []
    for s in sentences:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def read_sentence_file(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped, in order (one sentence per line).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file holds no non-empty line.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"no sentence file at {p} (expected a UTF-8 text file, one sentence per line)")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"sentence file {p} holds no sentence")
    return lines


def sentence_corpora() -> list[str]:
    """The valid ``corpus`` names of :func:`load_sentences`: the text corpora and ``"file"``."""
    return [*CORPORA.names(), FILE_CORPUS]


def load_sentences(
    corpus: str = "bbc_news",
    *,
    path: str | Path | None = None,
    valid_every: int = VALID_EVERY,
    min_words: int = MIN_WORDS,
    max_words: int = MAX_WORDS,
) -> tuple[list[str], list[str]]:
    """Training and validation sentences of a corpus, deterministic (no random state anywhere).

    Args:
        corpus: ``"bbc_news"`` (35,074 training and 2,050 validation sentences), ``"shakespeare"``,
            ``"shakespeare+bbc"`` (see :data:`sparsebrain.data.text.CORPORA`), or ``"file"`` for the text file at
            ``path``.
        path: with ``corpus="file"``, a UTF-8 text file holding one sentence per line; must be None otherwise.
        valid_every: document (or, for a file, line) ``i`` is held out iff ``i % valid_every == 0``.
        min_words: shortest sentence kept, in whitespace-separated words.
        max_words: longest sentence kept.

    Returns:
        ``(train, valid)``: lists of distinct sentences with no sentence in both.

    Raises:
        ValueError: an unknown corpus (the valid names are listed), ``path`` given or missing where it must not or
            must be, bad bounds, or an empty split.
        ImportError: the corpus's package is missing; the message gives the ``pip`` command.
        FileNotFoundError: no file at ``path``.

    Example:
        >>> train, valid = load_sentences("file", path="my_sentences.txt")  # doctest: +SKIP
    """
    check_positive_int(min_words, "min_words")
    check_positive_int(max_words, "max_words")
    if min_words > max_words:
        raise ValueError(f"min_words must be <= max_words, got {min_words} > {max_words}")
    if not isinstance(corpus, str):
        raise TypeError(f"corpus must be a string, got {corpus!r}")
    if corpus == FILE_CORPUS:
        if path is None:
            raise ValueError(f"corpus {FILE_CORPUS!r} reads a text file: pass its path (one sentence per line)")
        lines = [s for s in read_sentence_file(path) if min_words <= len(s.split()) <= max_words]
        train_raw, valid_raw = split_documents(_unique(lines), valid_every)
    else:
        if path is not None:
            raise ValueError(
                f"path is only used with corpus {FILE_CORPUS!r} (a text file of sentences); corpus {corpus!r} is "
                "read from its installed package"
            )
        if corpus not in CORPORA:
            raise unknown_name_error("sentence corpus", corpus, sentence_corpora())
        train_raw, valid_raw = [], []
        for load in CORPORA.get(corpus):
            train_docs, valid_docs = split_documents(load(), valid_every)  # within each source, as the LM data
            for docs, out in ((train_docs, train_raw), (valid_docs, valid_raw)):
                for doc in docs:
                    out += [s for s in split_sentences(doc) if keep_sentence(s, min_words, max_words)]
    valid = _unique(valid_raw)
    train = _unique(train_raw, exclude=set(valid))
    for split, sentences in (("train", train), ("valid", valid)):
        if not sentences:
            raise ValueError(
                f"corpus {corpus!r}: the {split} split has no sentence of {min_words}..{max_words} words "
                f"(every {valid_every}th document or line is held out for validation)"
            )
    return train, valid
