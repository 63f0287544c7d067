"""English -> Spanish translation data from two public-domain Bibles, read offline with the SWORD tool ``diatheke``.

The King James Version (SWORD module ``engKJV2006eb``) and the Reina-Valera 1909 (``spaRV1909eb``) are installed with
``apt-get install -y diatheke sword-text-kjv sword-text-sparv``; pairing them verse by verse gives 31,084 sentence
pairs (31,102 verses, less 18 that the Reina-Valera leaves empty where its versification differs). Whole books are
held out for validation and test (:data:`VALID_BOOKS`, :data:`TEST_BOOKS`), so no verse of a held-out book is seen
in training and near-duplicate parallel passages inside a book cannot leak.

Two known alignment quirks remain, as in any verse-aligned Bible corpus: the Reina-Valera puts most psalm titles
inside verse 1 where the KJV has them as headings (which are dropped), and where the versifications differ a verse
may hold a little more or less text on one side.

Example:
    >>> data, tok = build_translation_data(8000, 128, "runs/tok-bible-8000.json")  # doctest: +SKIP
    >>> batch = next(data.batches("train", max_tokens=4096, shuffle=True))  # doctest: +SKIP
    >>> batch.src.shape[0] * max(batch.src.shape[1], batch.tgt.shape[1]) <= 4096  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from .._validation import check_positive_int
from .text import SPECIAL_TOKENS, _atomic_write_text, load_or_train_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "BIBLE_MODULES",
    "TEST_BOOKS",
    "VALID_BOOKS",
    "TranslationBatch",
    "TranslationData",
    "build_translation_data",
    "clean_verse",
    "load_bible_pairs",
    "pair_verses",
    "parse_diatheke",
    "split_by_book",
    "verse_book",
]

# language -> (SWORD module, Debian package that installs it)
BIBLE_MODULES = {"english": ("engKJV2006eb", "sword-text-kjv"), "spanish": ("spaRV1909eb", "sword-text-sparv")}
BIBLE_RANGE = "Genesis 1:1-Revelation of John 22:21"  # the whole Bible in diatheke's key syntax
APT_COMMAND = "apt-get install -y diatheke sword-text-kjv sword-text-sparv"
CACHE_NAME = "bible_pairs_v1.tsv"  # bump the version when the parsing changes, so old caches are not reused
CACHE_HEADER = "# sparsebrain Bible verse pairs v1: reference<TAB>engKJV2006eb<TAB>spaRV1909eb"

# Held-out books, whole: about 5% of the pairs each (1,577 valid, 1,556 test). Mid-size books of several genres from
# both testaments; no gospel, Kings or Chronicles, whose parallel passages would leak from the training books.
VALID_BOOKS = ("Judges", "Ecclesiastes", "Hosea", "I Corinthians", "Philippians")
TEST_BOOKS = ("Joshua", "Daniel", "Romans", "James")
SPLITS = ("train", "valid", "test")

# "Book C:V: text". The verse lines after a heading are indented, and diatheke repeats a psalm's title before every
# later verse of the book; those title lines never have this form, so matching it is the whole parser.
_VERSE = re.compile(r"^\s*(?P<book>\S.*?) (?P<chapter>\d+):(?P<verse>\d+):(?: (?P<text>.*))?$")
_STRONGS = re.compile(r"<[GH]\d+>")  # Strong's numbers, e.g. "Jesucristo <G5547>" in the Reina-Valera
_USFM = re.compile(r"\\[a-z]+\d*\*?")  # markup that leaks into the KJV's plain text, e.g. "the \nd LORD"
_SPACE = re.compile(r"\s+")

VerseKey = tuple[str, int, int]  # (book, chapter, verse)


# --- parsing ----------------------------------------------------------------------------------------------------------


def clean_verse(text: str) -> str:
    """A verse without Strong's tags, pilcrows (¶), markup and repeated or outer whitespace.

    Example:
        >>> clean_verse("¶ And the \\\\nd LORD said <H0559>,  Let there be light.  ")
        'And the LORD said, Let there be light.'
    """
    text = _STRONGS.sub("", text)
    text = _USFM.sub("", text).replace("¶", "")
    text = _SPACE.sub(" ", text).strip()
    # A removed tag leaves "word <G1> ," as "word ,": close the gap before punctuation.
    return re.sub(r" ([,.;:?!])", r"\1", text)


def parse_diatheke(output: str) -> dict[VerseKey, str]:
    """The verses in ``diatheke -f plain`` output, in order, keyed by ``(book, chapter, verse)``, cleaned.

    Lines that are not ``Book C:V: text`` (headings, the closing ``(module)`` line, blank lines) are skipped.
    A verse the module leaves empty maps to ``""``.

    Raises:
        ValueError: the same reference appears twice (the output is not what this parser expects).

    Example:
        >>> parse_diatheke("Psalms 3:1: LORD, how are they increased!\\nA Psalm of David.\\n   Psalms 3:2: Many.\\n")
        {('Psalms', 3, 1): 'LORD, how are they increased!', ('Psalms', 3, 2): 'Many.'}
    """
    verses: dict[VerseKey, str] = {}
    for line in output.splitlines():
        m = _VERSE.match(line)
        if m is None:
            continue
        key = (m["book"], int(m["chapter"]), int(m["verse"]))
        if key in verses:
            raise ValueError(f"diatheke output has {key[0]} {key[1]}:{key[2]} twice")
        verses[key] = clean_verse(m["text"] or "")
    return verses


def pair_verses(english: Mapping[VerseKey, str], spanish: Mapping[VerseKey, str]) -> list[tuple[str, str, str]]:
    """``(reference, english, spanish)`` for every verse present and non-empty in both, in English order.

    Example:
        >>> pair_verses({("John", 11, 35): "Jesus wept.", ("Jude", 1, 1): "Jude"}, {("John", 11, 35): "Y lloró Jesús."})
        [('John 11:35', 'Jesus wept.', 'Y lloró Jesús.')]
    """
    pairs = []
    for key, en in english.items():
        es = spanish.get(key, "")
        if en and es:
            pairs.append((f"{key[0]} {key[1]}:{key[2]}", en, es))
    return pairs


def verse_book(reference: str) -> str:
    """The book of a reference. Example: ``verse_book("I Corinthians 13:4") == "I Corinthians"``."""
    return reference.rsplit(" ", 1)[0]


# --- diatheke and the cache -------------------------------------------------------------------------------------------


def _run_diatheke(modules: Sequence[str]) -> list[str]:
    """The whole Bible in each module as diatheke's plain text. The runs go in parallel: each takes seconds."""
    exe = shutil.which("diatheke")
    if exe is None:
        raise FileNotFoundError(f"the Bible translation data needs diatheke and two SWORD modules: `{APT_COMMAND}`")
    procs = [
        subprocess.Popen(
            [exe, "-b", module, "-f", "plain", "-k", BIBLE_RANGE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for module in modules
    ]
    outputs = []
    for module, proc in zip(modules, procs):
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"diatheke -b {module} failed ({proc.returncode}): {err.decode(errors='replace')}")
        outputs.append(out.decode("utf-8"))
    return outputs


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparsebrain"


def _read_cache(path: Path) -> list[tuple[str, str, str]] | None:
    """The cached pairs, or None if the file is absent or not this version's (then it is rebuilt)."""
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != CACHE_HEADER:
        return None
    pairs = []
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != 3:
            return None
        pairs.append((fields[0], fields[1], fields[2]))
    return pairs


def load_bible_pairs(cache_dir: str | Path | None = None, refresh: bool = False) -> list[tuple[str, str, str]]:
    """The 31,084 English (KJV) / Spanish (Reina-Valera 1909) verse pairs as ``(reference, english, spanish)``.

    The first call runs ``diatheke`` on both modules (about 5 s, the two in parallel) and caches the parsed pairs
    as a TSV file; later calls read the cache (well under a second).

    Args:
        cache_dir: folder of the cache file ``bible_pairs_v1.tsv``. Default: ``$XDG_CACHE_HOME/sparsebrain`` or
            ``~/.cache/sparsebrain``.
        refresh: ignore an existing cache and run diatheke again.

    Raises:
        FileNotFoundError: diatheke or a module is missing; the message gives the ``apt-get install`` command.

    Example:
        >>> pairs = load_bible_pairs()
        >>> len(pairs), pairs[0]
        (31084, ('Genesis 1:1', 'In the beginning God created the heaven and the earth.', 'EN el principio crió Dios los cielos y la tierra.'))
    """  # noqa: E501
    path = (_default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()) / CACHE_NAME
    if not refresh:
        cached = _read_cache(path)
        if cached is not None:
            return cached
    modules = [BIBLE_MODULES[lang][0] for lang in ("english", "spanish")]
    parsed = [parse_diatheke(text) for text in _run_diatheke(modules)]
    for lang, verses in zip(("english", "spanish"), parsed):
        if not verses:
            module, package = BIBLE_MODULES[lang]
            # diatheke prints nothing and exits 0 for a module it does not have.
            raise FileNotFoundError(
                f"diatheke found no verses in the SWORD module {module}: `apt-get install -y {package}` "
                f"(all that is needed: `{APT_COMMAND}`)"
            )
    pairs = pair_verses(parsed[0], parsed[1])
    _atomic_write_text(path, "".join(f"{line}\n" for line in [CACHE_HEADER, *("\t".join(p) for p in pairs)]))
    return pairs


def split_by_book(pairs: Sequence[tuple[str, str, str]]) -> dict[str, list[tuple[str, str, str]]]:
    """Train / valid / test by whole books: :data:`VALID_BOOKS`, :data:`TEST_BOOKS`, and all other books.

    The order of ``pairs`` is kept within each split.

    Example:
        >>> splits = split_by_book(load_bible_pairs())
        >>> {k: len(v) for k, v in splits.items()}
        {'train': 27951, 'valid': 1577, 'test': 1556}
    """
    where = {**{b: "valid" for b in VALID_BOOKS}, **{b: "test" for b in TEST_BOOKS}}
    splits: dict[str, list[tuple[str, str, str]]] = {s: [] for s in SPLITS}
    for pair in pairs:
        splits[where.get(verse_book(pair[0]), "train")].append(pair)
    return splits


# --- tokenized data and batches ---------------------------------------------------------------------------------------


class TranslationBatch(NamedTuple):
    """One padded batch. ``src`` and ``tgt`` start with ``<bos>``, end with ``<eos>``, then ``<pad>`` to the right.

    Attributes:
        src: ``(B, S)`` int64 English token ids.
        tgt: ``(B, T)`` int64 Spanish token ids (the decoder's input is ``tgt[:, :-1]``, its target ``tgt[:, 1:]``).
        src_text: the ``B`` English verses, as text.
        tgt_text: the ``B`` Spanish verses: the references for :func:`bleu`.
        verses: the ``B`` references, e.g. ``"Daniel 3:25"``.
    """

    src: Tensor
    tgt: Tensor
    src_text: list[str]
    tgt_text: list[str]
    verses: list[str]


@dataclasses.dataclass(repr=False)
class _Split:
    """One split's kept pairs. The token ids of all pairs lie in one flat tensor per side (one tensor per verse
    would cost 62,000 small tensors); pair ``i`` is ``src[src_start[i] : src_start[i + 1]]``."""

    src: Tensor  # (sum S_i,) int32: <bos> english <eos> of every pair, concatenated
    tgt: Tensor  # (sum T_i,) int32: <bos> spanish <eos>
    src_start: Tensor  # (n + 1,) int64 offsets into src
    tgt_start: Tensor  # (n + 1,) int64 offsets into tgt
    src_text: list[str]
    tgt_text: list[str]
    verses: list[str]
    num_dropped: int  # pairs dropped for being longer than max_len on either side

    def __len__(self) -> int:
        return len(self.verses)

    def lengths(self) -> Tensor:
        """``(n,)`` the longer side of each pair, in tokens."""
        return torch.maximum(self.src_start.diff(), self.tgt_start.diff())


def _pad(flat: Tensor, start: Tensor, rows: list[int], pad_id: int) -> Tensor:
    """Rows ``rows`` of a flat ragged tensor as a ``(B, L)`` int64 tensor padded on the right with ``pad_id``."""
    begin, end = start[rows].tolist(), start[[i + 1 for i in rows]].tolist()
    out = torch.full((len(rows), max(e - b for b, e in zip(begin, end))), pad_id, dtype=torch.long)  # (B, L)
    for j, (b, e) in enumerate(zip(begin, end)):
        out[j, : e - b] = flat[b:e]
    return out


class TranslationData:
    """Tokenized, length-filtered English -> Spanish pairs per split, and length-bucketed padded batches.

    Built with :meth:`from_pairs` or :func:`build_translation_data`. Every sequence is ``<bos> ... <eos>``; pairs
    whose English or Spanish side has more than ``max_len`` tokens (``<bos>``/``<eos>`` included) are dropped from
    every split, and :attr:`num_dropped` says how many.

    Attributes:
        tokenizer: the joint English + Spanish BPE tokenizer.
        max_len: the longest kept sequence, in tokens.
        pad_id, bos_id, eos_id: ids of ``<pad>``, ``<bos>``, ``<eos>``.

    Example:
        >>> for batch in data.batches("valid", batch_size=64):  # doctest: +SKIP
        ...     hyps += [data.decode(ids) for ids in model.generate(batch.src)]
        ...     refs += batch.tgt_text
        >>> sparsebrain.metrics.bleu(hyps, refs)  # doctest: +SKIP
    """

    def __init__(self, tokenizer: Tokenizer, splits: dict[str, _Split], max_len: int) -> None:
        self.tokenizer = tokenizer
        self.max_len = max_len
        ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"the tokenizer lacks the special tokens {missing}; train it with train_bpe()")
        self.pad_id, self.bos_id, self.eos_id = ids["<pad>"], ids["<bos>"], ids["<eos>"]
        self._splits = splits

    @classmethod
    def from_pairs(
        cls, splits: Mapping[str, Sequence[tuple[str, str, str]]], tokenizer: Tokenizer, max_len: int
    ) -> TranslationData:
        """Encodes ``(reference, english, spanish)`` pairs per split and drops those over ``max_len`` tokens.

        Example:
            >>> data = TranslationData.from_pairs(split_by_book(pairs), tok, max_len=128)  # doctest: +SKIP
        """
        check_positive_int(max_len, "max_len")
        bos, eos = tokenizer.token_to_id("<bos>"), tokenizer.token_to_id("<eos>")
        if bos is None or eos is None:
            raise ValueError("the tokenizer has no <bos>/<eos> tokens; train it with train_bpe()")
        encoded: dict[str, _Split] = {}
        for name, pairs in splits.items():
            en = tokenizer.encode_batch([p[1] for p in pairs], add_special_tokens=False)
            es = tokenizer.encode_batch([p[2] for p in pairs], add_special_tokens=False)
            src: list[int] = []
            tgt: list[int] = []
            src_start, tgt_start = [0], [0]
            kept: list[tuple[str, str, str]] = []
            for pair, e, s in zip(pairs, en, es):
                if max(len(e.ids), len(s.ids)) + 2 > max_len:
                    continue
                src += [bos, *e.ids, eos]
                tgt += [bos, *s.ids, eos]
                src_start.append(len(src))
                tgt_start.append(len(tgt))
                kept.append(pair)
            encoded[name] = _Split(
                src=torch.tensor(src, dtype=torch.int32),
                tgt=torch.tensor(tgt, dtype=torch.int32),
                src_start=torch.tensor(src_start, dtype=torch.long),
                tgt_start=torch.tensor(tgt_start, dtype=torch.long),
                src_text=[p[1] for p in kept],
                tgt_text=[p[2] for p in kept],
                verses=[p[0] for p in kept],
                num_dropped=len(pairs) - len(kept),
            )
        return cls(tokenizer, encoded, max_len)

    @property
    def vocab_size(self) -> int:
        """Size of the joint vocabulary (shared source and target embedding rows)."""
        return int(self.tokenizer.get_vocab_size())

    @property
    def splits(self) -> list[str]:
        """Names of the splits, e.g. ``["train", "valid", "test"]``."""
        return list(self._splits)

    @property
    def num_dropped(self) -> dict[str, int]:
        """Pairs dropped per split for having more than ``max_len`` tokens on a side."""
        return {k: v.num_dropped for k, v in self._splits.items()}

    def _split(self, split: str) -> _Split:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(self._splits)}")
        return self._splits[split]

    def num_examples(self, split: str) -> int:
        """Pairs kept in ``split``. Example: ``data.num_examples("test")``."""
        return len(self._split(split))

    def batches(
        self,
        split: str,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[TranslationBatch]:
        """One pass over a split in padded batches of pairs of similar length (little padding).

        Pairs are sorted by ``L = max(len(src), len(tgt))``, then cut into consecutive batches of ``batch_size``
        pairs, or of as many pairs as keep ``B * max L <= max_tokens`` (a budget on padded tokens per side, so
        batches of short verses hold more of them). With ``shuffle``, pairs of equal length are in random order and
        so is the order of the batches; without, the pass is deterministic, shortest first.

        Args:
            split: ``"train"``, ``"valid"`` or ``"test"``.
            batch_size: pairs per batch. Give this or ``max_tokens``, not both.
            max_tokens: padded tokens per side per batch; at least ``max_len``.
            shuffle: randomize for training.
            generator: CPU generator making a shuffled pass reproducible.

        Example:
            >>> g = torch.Generator().manual_seed(0)
            >>> for src, tgt, *_ in data.batches("train", max_tokens=8192, shuffle=True, generator=g):  # doctest: +SKIP
            ...     logits = model(src, tgt[:, :-1])  # (B, T - 1, V), targets tgt[:, 1:], ignore_index=data.pad_id
        """
        if (batch_size is None) == (max_tokens is None):
            raise ValueError("give exactly one of batch_size and max_tokens")
        part = self._split(split)
        n = len(part)
        if n == 0:
            return
        lengths = part.lengths()  # (n,)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order[torch.sort(lengths[order], stable=True).indices]  # by length; ties keep their (random) order
        groups: list[list[int]] = []
        if batch_size is not None:
            check_positive_int(batch_size, "batch_size")
            groups = [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
        else:
            assert max_tokens is not None
            check_positive_int(max_tokens, "max_tokens")
            longest = int(lengths.max())
            if max_tokens < longest:
                raise ValueError(f"max_tokens={max_tokens} is below the longest {split} pair ({longest} tokens)")
            current: list[int] = []
            for i, L in zip(order.tolist(), lengths[order].tolist()):
                if current and (len(current) + 1) * L > max_tokens:  # sorted: L is the new batch maximum
                    groups.append(current)
                    current = []
                current.append(i)
            groups.append(current)
        if shuffle:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        for g in groups:
            yield TranslationBatch(
                src=_pad(part.src, part.src_start, g, self.pad_id),
                tgt=_pad(part.tgt, part.tgt_start, g, self.pad_id),
                src_text=[part.src_text[i] for i in g],
                tgt_text=[part.tgt_text[i] for i in g],
                verses=[part.verses[i] for i in g],
            )

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Text of a generated sequence: up to the first ``<eos>``, without ``<bos>``/``<pad>``.

        Example:
            >>> data.decode(batch.tgt[0]) == batch.tgt_text[0]  # doctest: +SKIP
            True
        """
        seq = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if self.eos_id in seq:
            seq = seq[: seq.index(self.eos_id)]
        return self.tokenizer.decode([i for i in seq if i not in (self.bos_id, self.pad_id)], skip_special_tokens=True)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v):,}" for k, v in self._splits.items())
        return (
            f"TranslationData({sizes}, dropped={self.num_dropped}, max_len={self.max_len}, "
            f"vocab_size={self.vocab_size})"
        )


def build_translation_data(
    vocab_size: int, max_len: int, tokenizer_path: str | Path | None = None
) -> tuple[TranslationData, Tokenizer]:
    """The Bible pairs split by book, with a joint BPE tokenizer trained on the training split's two languages.

    The tokenizer is read from ``tokenizer_path`` if that file exists (its vocabulary size must be ``vocab_size``),
    else trained on the English and Spanish training verses only and saved there.

    Args:
        vocab_size: joint vocabulary size, special tokens included.
        max_len: longest sequence kept, ``<bos>`` and ``<eos>`` included.
        tokenizer_path: JSON file to load the tokenizer from, or to save it to.

    Raises:
        FileNotFoundError: diatheke or a module is missing (with the ``apt-get`` command).
        ValueError: a saved tokenizer of another vocabulary size (both sizes named).

    Example:
        >>> data, tok = build_translation_data(8000, 128, "runs/tok-bible-8000.json")  # doctest: +SKIP
        >>> data.num_dropped  # doctest: +SKIP
        {'train': 1, 'valid': 0, 'test': 0}
    """
    splits = split_by_book(load_bible_pairs())
    train = splits["train"]
    tok = load_or_train_tokenizer(
        tokenizer_path, vocab_size, lambda: [p[1] for p in train] + [p[2] for p in train], what="Bible"
    )
    return TranslationData.from_pairs(splits, tok, max_len), tok
