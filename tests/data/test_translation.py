"""English -> Spanish Bible pairs: the diatheke parser on captured output, the split by book, batches and BLEU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("tokenizers")

from sparsebrain.data import translation as R
from sparsebrain.data.text import train_bpe
from sparsebrain.data.translation import (
    TEST_BOOKS,
    VALID_BOOKS,
    TranslationData,
    build_translation_data,
    clean_verse,
    load_bible_pairs,
    pair_verses,
    parse_diatheke,
    split_by_book,
    verse_book,
)
from sparsebrain.metrics import bleu

# Captured from `diatheke -b engKJV2006eb -f plain -k <key>` (keys "Genesis 1:6", "Genesis 3:1", "Exodus 6:3",
# "Numbers 12:16-13:1", "Psalms 2:12-3:2"), joined: a psalm title is repeated before each verse, whose line is then
# indented; trailing spaces are real; pilcrows and "\nd" markup leak into the plain text.
KJV = (
    "Genesis 1:6: ¶ And God said, Let there be a firmament in the midst of the waters, and let it divide the waters "
    "from the waters.\n"
    "Genesis 3:1: Now the serpent was more subtil than any beast of the field which the LORD God had made. And he "
    "said unto the woman, Yea, hath God said, Ye shall not eat of every tree of the garden?\n"
    "Exodus 6:3: And I appeared unto Abraham, unto Isaac, and unto Jacob, by the name of God Almighty, but by my "
    "name \\nd JEHOVAH was I not known to them.\n"
    "Numbers 12:16: And afterward the people removed from Hazeroth, and pitched in the wilderness of Paran.   \n"
    "Numbers 13:1: And the LORD spake unto Moses, saying,\n"
    "Psalms 2:12: Kiss the Son, lest he be angry, and ye perish from the way, when his wrath is kindled but a "
    "little. Blessed are all they that put their trust in him. \n"
    "\n"
    "\n"
    "A Psalm of David, when he fled from Absalom his son.\n"
    "   Psalms 3:1: LORD, how are they increased that trouble me! many are they that rise up against me. \n"
    "\n"
    "A Psalm of David, when he fled from Absalom his son.\n"
    "   Psalms 3:2: Many there be which say of my soul, There is no help for him in God. Selah. \n"
    "\n"
    "(engKJV2006eb)\n"
)
# The same keys from spaRV1909eb: Strong's tags, and an empty verse (Numbers 12:16) where the versification differs.
RV = (
    "Genesis 1:6: Y dijo Dios: Haya expansión en medio de las aguas, y separe las aguas de las aguas.\n"
    "Genesis 3:1: EMPERO la serpiente era astuta, más que todos los animales del campo que Jehová Dios había hecho; "
    "la cual dijo á la mujer: ¿Conque <H3588> Dios os ha dicho: No comáis de todo árbol del huerto?\n"
    "Exodus 6:3: Y aparecí á Abraham, á Isaac y á Jacob bajo el nombre de Dios Omnipotente, mas en mi nombre "
    "JEHOVÁ no me notifiqué á ellos.\n"
    "Numbers 12:16: \n"
    "Numbers 13:1: Y DESPUÉS movió el pueblo de Haseroth, y asentaron el campo en el desierto de Parán.\n"
    "Psalms 2:12: Besad al Hijo, porque no se enoje, y perezcáis en el camino, cuando se encendiere un poco su furor. "
    "Bienaventurados todos los que en él confían.  \n"
    "Psalms 3:1: Salmo de David, cuando huía de delante de Absalom su hijo. ¡OH Jehová, cuánto se han multiplicado "
    "mis enemigos! muchos se levantan contra mí.\n"
    "Psalms 3:2: Muchos dicen de mi vida: No hay para él salud en Dios. (Selah.)\n"
    "(spaRV1909eb)\n"
)
REFS = ["Genesis 1:6", "Genesis 3:1", "Exodus 6:3", "Numbers 12:16", "Numbers 13:1", "Psalms 2:12", "Psalms 3:1"]


def toy_pairs(n_per_book: int = 12) -> list[tuple[str, str, str]]:
    """Short made-up pairs in train, valid and test books, of varied lengths."""
    words_en = "the lord said unto moses and the people went up into the mountain of god".split()
    words_es = "y dijo jehová á moisés y el pueblo subió al monte de dios en aquel día".split()
    pairs = []
    for book in ("Genesis", VALID_BOOKS[0], TEST_BOOKS[0], "Acts"):
        for v in range(1, n_per_book + 1):
            k = 2 + (v * 5) % 13
            pairs.append((f"{book} 1:{v}", " ".join(words_en[:k]) + ".", " ".join(words_es[: k + v % 3]) + "."))
    return pairs


@pytest.fixture(scope="module")
def toy_data() -> TranslationData:
    pairs = toy_pairs()
    tok = train_bpe([p[1] for p in pairs] + [p[2] for p in pairs], vocab_size=300)
    return TranslationData.from_pairs(split_by_book(pairs), tok, max_len=12)


# --- parsing ----------------------------------------------------------------------------------------------------------


def test_clean_verse_strips_tags_pilcrows_markup_and_whitespace() -> None:
    assert clean_verse("¶ And God said,  Let there be light.  ") == "And God said, Let there be light."
    assert clean_verse("¿Conque <H3588> Dios <G0846>, dicho?") == "¿Conque Dios, dicho?"
    assert clean_verse("by my name \\nd JEHOVAH was") == "by my name JEHOVAH was"
    assert clean_verse("  \t ") == ""


def test_parse_diatheke_keeps_only_verse_lines() -> None:
    en = parse_diatheke(KJV)
    assert [f"{b} {c}:{v}" for b, c, v in en] == [*REFS, "Psalms 3:2"]  # headings and "(module)" dropped
    assert en[("Genesis", 1, 6)].startswith("And God said, Let there")  # pilcrow gone
    assert en[("Exodus", 6, 3)].endswith("by my name JEHOVAH was I not known to them.")
    assert en[("Psalms", 3, 1)].startswith("LORD, how are they increased that trouble me!")
    assert not any("Psalm of David" in t for t in en.values())
    es = parse_diatheke(RV)
    assert es[("Numbers", 12, 16)] == ""
    assert "¿Conque Dios os ha dicho" in es[("Genesis", 3, 1)]
    assert all("<" not in t and "¶" not in t and t == t.strip() and "  " not in t for t in [*en.values(), *es.values()])
    with pytest.raises(ValueError, match="Genesis 1:6 twice"):
        parse_diatheke(KJV + KJV)


def test_pairing_is_by_reference_and_skips_empty_or_missing_verses() -> None:
    en, es = parse_diatheke(KJV), parse_diatheke(RV)
    del es[("Genesis", 1, 6)]
    es[("Jude", 1, 1)] = "Judas, siervo de Jesucristo."  # only in Spanish: ignored
    es = dict(reversed(list(es.items())))  # pairing must not depend on order
    pairs = pair_verses(en, es)
    refs = [r for r, _, _ in pairs]
    assert refs == ["Genesis 3:1", "Exodus 6:3", "Numbers 13:1", "Psalms 2:12", "Psalms 3:1", "Psalms 3:2"]
    by_ref = {r: (e, s) for r, e, s in pairs}
    assert by_ref["Numbers 13:1"] == ("And the LORD spake unto Moses, saying,", es[("Numbers", 13, 1)])
    assert by_ref["Psalms 3:2"][1] == "Muchos dicen de mi vida: No hay para él salud en Dios. (Selah.)"
    assert verse_book("I Corinthians 13:4") == "I Corinthians" and verse_book("Revelation of John 22:21") == (
        "Revelation of John"
    )


def test_load_bible_pairs_caches_the_parsed_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_diatheke(modules):  # type: ignore[no-untyped-def]
        calls.append(modules)
        return [KJV, RV]

    monkeypatch.setattr(R, "_run_diatheke", fake_diatheke)
    pairs = load_bible_pairs(cache_dir=tmp_path)
    assert [r for r, _, _ in pairs] == ["Genesis 1:6", "Genesis 3:1", "Exodus 6:3", *REFS[4:], "Psalms 3:2"]
    assert calls == [["engKJV2006eb", "spaRV1909eb"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [R.CACHE_NAME]
    assert load_bible_pairs(cache_dir=tmp_path) == pairs and len(calls) == 1  # read back from the cache
    assert load_bible_pairs(cache_dir=tmp_path, refresh=True) == pairs and len(calls) == 2
    (tmp_path / R.CACHE_NAME).write_text("# an older format\nGenesis 1:1\tx\n")
    assert load_bible_pairs(cache_dir=tmp_path) == pairs and len(calls) == 3  # a stale cache is rebuilt


def test_missing_diatheke_or_module_gives_the_apt_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install -y diatheke sword-text-kjv sword-text-sparv"):
        load_bible_pairs(cache_dir=tmp_path)
    monkeypatch.undo()
    # diatheke prints only "(module)" for a module it does not have
    monkeypatch.setattr(R, "_run_diatheke", lambda modules: [KJV, "(spaRV1909eb)\n"])
    with pytest.raises(FileNotFoundError, match="apt-get install -y sword-text-sparv"):
        load_bible_pairs(cache_dir=tmp_path)


@pytest.mark.skipif(
    shutil.which("diatheke") is None, reason="apt-get install -y diatheke sword-text-kjv sword-text-sparv"
)
def test_real_bible_pairs_and_split_by_book() -> None:
    pairs = load_bible_pairs()  # ~5 s on the first run, then from ~/.cache/sparsebrain
    assert len(pairs) == 31_084
    assert pairs[0] == (
        "Genesis 1:1",
        "In the beginning God created the heaven and the earth.",
        "EN el principio crió Dios los cielos y la tierra.",
    )
    assert pairs[-1][0] == "Revelation of John 22:21"
    assert not any("<" in t or "¶" in t or "\\" in t for _, e, s in pairs for t in (e, s))
    splits = split_by_book(pairs)
    books = {name: {verse_book(r) for r, _, _ in part} for name, part in splits.items()}
    assert books["valid"] == set(VALID_BOOKS) and books["test"] == set(TEST_BOOKS)
    assert not (books["train"] & books["valid"] or books["train"] & books["test"] or books["valid"] & books["test"])
    assert len(books["train"]) == 66 - len(VALID_BOOKS) - len(TEST_BOOKS)
    sizes = {name: len(part) for name, part in splits.items()}
    assert sizes == {"train": 27_951, "valid": 1_577, "test": 1_556}


def test_split_by_book_on_toy_pairs_keeps_order_and_books_whole() -> None:
    pairs = toy_pairs(3)
    splits = split_by_book(pairs)
    assert [r for r, _, _ in splits["valid"]] == [f"{VALID_BOOKS[0]} 1:{v}" for v in (1, 2, 3)]
    assert [r for r, _, _ in splits["test"]] == [f"{TEST_BOOKS[0]} 1:{v}" for v in (1, 2, 3)]
    assert [verse_book(r) for r, _, _ in splits["train"]] == ["Genesis"] * 3 + ["Acts"] * 3


# --- tokenized data and batches ---------------------------------------------------------------------------------------


def test_from_pairs_wraps_in_bos_eos_and_drops_long_pairs(toy_data: TranslationData) -> None:
    d = toy_data
    assert (d.pad_id, d.bos_id, d.eos_id) == (0, 1, 2) and d.vocab_size == 300
    assert d.splits == ["train", "valid", "test"]
    for split in d.splits:
        assert d.num_examples(split) + d.num_dropped[split] == 12 * (2 if split == "train" else 1)
    assert sum(d.num_dropped.values()) > 0 and d.num_examples("train") > 0  # max_len=12 cuts some, keeps others
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        d.num_examples("dev")


@pytest.mark.parametrize("kw", [{"batch_size": 5}, {"max_tokens": 40}])
def test_batches_are_padded_and_cover_the_split_once(toy_data: TranslationData, kw: dict) -> None:
    d = toy_data
    seen = []
    for batch in d.batches("train", **kw):
        src, tgt = batch.src, batch.tgt
        B = src.shape[0]
        assert src.dtype == tgt.dtype == torch.int64 and tgt.shape[0] == B == len(batch.verses)
        assert len(batch.src_text) == len(batch.tgt_text) == B
        if "batch_size" in kw:
            assert B <= kw["batch_size"]
        else:
            assert B * max(src.shape[1], tgt.shape[1]) <= kw["max_tokens"]
        for ids, text in ((src, batch.src_text), (tgt, batch.tgt_text)):
            assert (ids[:, 0] == d.bos_id).all()
            lengths = (ids != d.pad_id).sum(1)  # (B,)
            assert int(lengths.max()) == ids.shape[1]  # padded to the longest, no further
            for row, n, t in zip(ids, lengths.tolist(), text):
                assert row[n - 1] == d.eos_id and (row[n:] == d.pad_id).all() and (row[:n] != d.pad_id).all()
                assert d.tokenizer.decode(row[1 : n - 1].tolist()) == t  # the raw text belongs to this row
                assert d.decode(row) == t
        seen += batch.verses
    assert sorted(seen) == sorted(d._split("train").verses)  # every kept pair exactly once


def test_batches_are_bucketed_by_length_and_shuffled_reproducibly(toy_data: TranslationData) -> None:
    d = toy_data
    ordered = list(d.batches("train", batch_size=4))
    L = [max(b.src.shape[1], b.tgt.shape[1]) for b in ordered]
    assert L == sorted(L)  # unshuffled: shortest first
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = [b.verses for b in d.batches("train", batch_size=4, shuffle=True, generator=gen())]
    b = [b.verses for b in d.batches("train", batch_size=4, shuffle=True, generator=gen())]
    assert a == b and sorted(v for vs in a for v in vs) == sorted(v for x in ordered for v in x.verses)
    with pytest.raises(ValueError, match="exactly one of batch_size and max_tokens"):
        next(d.batches("train"))
    with pytest.raises(ValueError, match="max_tokens=3 is below the longest"):
        next(d.batches("train", max_tokens=3))


def test_build_translation_data_trains_then_loads_the_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = toy_pairs()
    monkeypatch.setattr(R, "load_bible_pairs", lambda: pairs)
    path = tmp_path / "tok.json"
    data, tok = build_translation_data(300, max_len=64, tokenizer_path=path)
    assert path.is_file() and data.vocab_size == 300 and data.num_dropped == {"train": 0, "valid": 0, "test": 0}
    assert data.num_examples("train") == 24 and data.num_examples("valid") == data.num_examples("test") == 12
    _, tok2 = build_translation_data(300, max_len=64, tokenizer_path=path)
    assert tok2.to_str() == tok.to_str()
    with pytest.raises(ValueError, match=r"vocab size 300.*vocab_size=310"):
        build_translation_data(310, max_len=64, tokenizer_path=path)


# --- BLEU -------------------------------------------------------------------------------------------------------------


def test_bleu_identical_is_100_and_different_is_lower() -> None:
    pytest.importorskip("sacrebleu")
    refs = ["Y dijo Dios: Sea la luz: y fué la luz.", "Y vió Dios que la luz era buena."]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert bleu(["Y dijo Dios: Sea la luz.", "Y vió Dios la luz."], refs) < 100.0
    assert bleu(["el perro come pan", "nada"], refs) < 5.0
    with pytest.raises(ValueError, match="1 hypotheses but 2 references"):
        bleu(refs[:1], refs)
