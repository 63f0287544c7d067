"""An encoder-decoder Transformer for translation whose sparse layers and percolation junctions are declared.

The shape of the Cannistraci-Hebb Transformer experiments (Multi30k, IWSLT, WMT): pre-norm encoder and decoder
layers, every ``nn.Linear`` sparse except the generator (``q``, ``k``, ``v``, ``o`` of every self- and
cross-attention, ``w1`` and ``w2`` of every feed-forward block), with greedy and beam-search decoding (the papers
report BLEU with beam 2).

Percolation junctions per block: ``(q, k)`` paired per head dimension (row ``d`` of ``q`` and row ``d`` of ``k`` meet
in the dot product, so a dimension is only useful if alive in both), ``v -> o`` and ``w1 -> w2``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_fraction, check_positive_int
from ..nn.sparse_linear import SparseLinear
from ..topology.percolation import Junction, attention_junctions

__all__ = [
    "FeedForward",
    "MultiHeadAttention",
    "Seq2SeqConfig",
    "Seq2SeqTransformer",
    "label_smoothed_loss",
    "sinusoidal_positions",
]


@dataclass
class Seq2SeqConfig:
    """Hyperparameters of :class:`Seq2SeqTransformer`; the defaults are Transformer-base (Vaswani et al., 2017).

    Example:
        >>> Seq2SeqConfig(src_vocab=100, tgt_vocab=120, dim=64, n_heads=4, ff=128).ff
        128
    """

    src_vocab: int  # source vocabulary size, special tokens included
    tgt_vocab: int  # target vocabulary size, special tokens included
    dim: int = 512  # model width (d_model)
    n_heads: int = 8  # attention heads; dim must be divisible by it
    enc_layers: int = 6  # encoder layers
    dec_layers: int = 6  # decoder layers
    ff: int = 2048  # hidden width of the feed-forward blocks
    dropout: float = 0.1  # on embeddings, attention weights and residual branches
    max_len: int = 256  # longest source / decoder input; also the default decoding length
    pad_id: int = 0  # padding, in both vocabularies; never generated
    bos_id: int = 1  # first decoder input; never generated
    eos_id: int = 2  # ends a generated target
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"  # fixed sin/cos table or learned embeddings
    share_embeddings: bool = False  # one token embedding for source and target (needs src_vocab == tgt_vocab)
    tie_generator: bool = False  # the generator reuses the target embedding matrix as its weight

    def __post_init__(self) -> None:
        for name in ("src_vocab", "tgt_vocab", "dim", "n_heads", "enc_layers", "dec_layers", "ff", "max_len"):
            check_positive_int(getattr(self, name), f"Seq2SeqConfig.{name}")
        if self.dim % self.n_heads:
            raise ValueError(
                f"Seq2SeqConfig.dim must be divisible by n_heads, got dim={self.dim}, n_heads={self.n_heads}"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise TypeError(f"Seq2SeqConfig.dropout must be a number in [0, 1), got {self.dropout!r}")
        check_fraction(self.dropout, "Seq2SeqConfig.dropout", closed_high=False)
        for name, vocabs in (
            ("pad_id", ("src_vocab", "tgt_vocab")),
            ("bos_id", ("tgt_vocab",)),
            ("eos_id", ("tgt_vocab",)),
        ):
            value = getattr(self, name)
            limit = min(getattr(self, v) for v in vocabs)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
                raise ValueError(
                    f"Seq2SeqConfig.{name} must be an integer in [0, {limit}) ({' and '.join(vocabs)}), got {value!r}"
                )
        if len({self.pad_id, self.bos_id, self.eos_id}) < 3:
            raise ValueError(
                f"Seq2SeqConfig.pad_id, bos_id and eos_id must be distinct, got {self.pad_id}, {self.bos_id}, "
                f"{self.eos_id} (pad and bos are never generated, so sharing an id with eos would stop nothing)"
            )
        if self.positions not in ("sinusoidal", "learned"):
            raise ValueError(f"Seq2SeqConfig.positions must be 'sinusoidal' or 'learned', got {self.positions!r}")
        if self.positions == "sinusoidal" and self.dim % 2:
            raise ValueError(f"Seq2SeqConfig.dim must be even for sinusoidal positions, got {self.dim}")
        if self.share_embeddings and self.src_vocab != self.tgt_vocab:
            raise ValueError(
                "Seq2SeqConfig.share_embeddings needs src_vocab == tgt_vocab, "
                f"got src_vocab={self.src_vocab}, tgt_vocab={self.tgt_vocab}"
            )


def sinusoidal_positions(n: int, dim: int, *, device: torch.device | str | None = None) -> Tensor:
    """The fixed position table ``PE[p, 2i] = sin(p / 10000^(2i/dim))``, ``PE[p, 2i+1] = cos(p / 10000^(2i/dim))``.

    Args:
        n: Number of positions.
        dim: Model width (even).
        device: Where to build the table.

    Returns:
        A float32 tensor ``(n, dim)``.

    Example:
        >>> sinusoidal_positions(3, 4)[1]
        tensor([0.8415, 0.5403, 0.0100, 0.9999])
    """
    # Built in float64 on the CPU (some accelerators lack float64) so large positions keep their accuracy.
    pos = torch.arange(n, dtype=torch.float64)[:, None]  # (n, 1)
    freq = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    table = torch.zeros(n, dim, dtype=torch.float64)  # (n, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.to(device=device, dtype=torch.float32)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate ``q``, ``k``, ``v``, ``o`` projections (each its own sparse layer).

    Self-attention when ``context`` is None, cross-attention (queries from ``x``, keys and values from ``context``)
    otherwise. ``attn_mask`` is boolean, True where a query may attend, broadcastable to ``(B, nh, T, S)``.

    Example:
        >>> attn = MultiHeadAttention(16, 4)
        >>> attn(torch.zeros(2, 5, 16), context=torch.zeros(2, 7, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        dropout: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.k = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.v = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.o = nn.Linear(dim, dim, device=device, dtype=dtype)

    def _heads(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)

    def project_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``(B, nh, S, hs)`` of ``context`` ``(B, S, C)``; decoding caches them."""
        return self._heads(self.k(context)), self._heads(self.v(context))

    def attend(
        self, x: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        """Attention of the queries of ``x`` ``(B, T, C)`` over precomputed keys and values ``(B, nh, S, hs)``."""
        B, T, C = x.shape
        q = self._heads(self.q(x))  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        # (B, nh, T, hs); a boolean mask drops keys with -inf before the softmax, so masked keys get exactly 0 weight
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        return self.o(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)

    def forward(
        self, x: Tensor, context: Tensor | None = None, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        k, v = self.project_kv(x if context is None else context)  # (B, nh, S, hs) each
        return self.attend(x, k, v, attn_mask, is_causal)


class FeedForward(nn.Module):
    """``w2(dropout(relu(w1(x))))``: ReLU, as in Transformer-base; GELU would not change the sparse structure.

    Example:
        >>> FeedForward(16, 32)(torch.zeros(2, 3, 16)).shape
        torch.Size([2, 3, 16])
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        dropout: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, device=device, dtype=dtype)
        self.w2 = nn.Linear(hidden, dim, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.dropout(torch.relu(self.w1(x))))  # (B, T, C)


class EncoderLayer(nn.Module):
    """Pre-norm: ``x + attn(ln(x))`` then ``x + ffn(ln(x))``."""

    def __init__(
        self, cfg: Seq2SeqConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(cfg.dim, **factory)
        self.self_attn = MultiHeadAttention(cfg.dim, cfg.n_heads, cfg.dropout, **factory)
        self.norm2 = nn.LayerNorm(cfg.dim, **factory)
        self.ffn = FeedForward(cfg.dim, cfg.ff, cfg.dropout, **factory)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        x = x + self.drop(self.self_attn(self.norm1(x), attn_mask=attn_mask))  # (B, S, C)
        return x + self.drop(self.ffn(self.norm2(x)))  # (B, S, C)


@dataclass
class _LayerCache:
    """One decoder layer's keys and values during incremental decoding."""

    cross_k: Tensor  # (N, nh, S, hs), fixed: the memory does not change while decoding
    cross_v: Tensor
    self_k: Tensor | None = None  # (N, nh, t, hs), one more position per step
    self_v: Tensor | None = None

    def reorder_(self, index: Tensor) -> None:
        """Keeps rows ``index`` (beam search: each new beam continues the cache of the beam it came from)."""
        self.cross_k, self.cross_v = self.cross_k[index], self.cross_v[index]
        if self.self_k is not None and self.self_v is not None:
            self.self_k, self.self_v = self.self_k[index], self.self_v[index]


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention over the encoder memory, feed-forward, each residual."""

    def __init__(
        self, cfg: Seq2SeqConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(cfg.dim, **factory)
        self.self_attn = MultiHeadAttention(cfg.dim, cfg.n_heads, cfg.dropout, **factory)
        self.norm2 = nn.LayerNorm(cfg.dim, **factory)
        self.cross_attn = MultiHeadAttention(cfg.dim, cfg.n_heads, cfg.dropout, **factory)
        self.norm3 = nn.LayerNorm(cfg.dim, **factory)
        self.ffn = FeedForward(cfg.dim, cfg.ff, cfg.dropout, **factory)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        # Causality comes from is_causal alone: targets are right-padded, so a pad can only sit after every real token
        # and never leaks into an earlier position; its own outputs are ignored by the loss.
        x = x + self.drop(self.self_attn(self.norm1(x), is_causal=True))  # (B, T, C)
        x = x + self.drop(self.cross_attn(self.norm2(x), context=memory, attn_mask=memory_mask))  # (B, T, C)
        return x + self.drop(self.ffn(self.norm3(x)))  # (B, T, C)

    def init_cache(self, memory: Tensor) -> _LayerCache:
        return _LayerCache(*self.cross_attn.project_kv(memory))

    def step(self, x: Tensor, cache: _LayerCache, memory_mask: Tensor) -> Tensor:
        """One new position ``x`` ``(N, 1, C)``; its keys and values join ``cache``, which it attends to entirely."""
        h = self.norm1(x)
        k, v = self.self_attn.project_kv(h)  # (N, nh, 1, hs) each
        cache.self_k = k if cache.self_k is None else torch.cat([cache.self_k, k], dim=2)  # (N, nh, t + 1, hs)
        cache.self_v = v if cache.self_v is None else torch.cat([cache.self_v, v], dim=2)  # (N, nh, t + 1, hs)
        x = x + self.drop(self.self_attn.attend(h, cache.self_k, cache.self_v))  # (N, 1, C)
        x = x + self.drop(self.cross_attn.attend(self.norm2(x), cache.cross_k, cache.cross_v, memory_mask))  # (N, 1, C)
        return x + self.drop(self.ffn(self.norm3(x)))  # (N, 1, C)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside; every submodule's own training flag is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


class Seq2SeqTransformer(nn.Module):
    """A pre-norm encoder-decoder Transformer for translation; all Linear layers but the generator are sparse.

    Args:
        config: The hyperparameters (:class:`Seq2SeqConfig`).
        device: Where to create the parameters.
        dtype: Floating dtype of the parameters.

    Source pads (``pad_id``) are masked as keys in encoder self-attention and decoder cross-attention, so padding a
    source on the right changes no output. Decoder inputs must be right-padded too: the causal mask alone then keeps
    pads from influencing the real positions (and the loss ignores the pads' own outputs).

    Example:
        >>> cfg = Seq2SeqConfig(src_vocab=20, tgt_vocab=20, dim=32, n_heads=4, enc_layers=1, dec_layers=1, ff=64)
        >>> model = Seq2SeqTransformer(cfg)
        >>> src, tgt_in = torch.randint(3, 20, (2, 7)), torch.randint(3, 20, (2, 5))
        >>> model(src, tgt_in).shape
        torch.Size([2, 5, 20])
        >>> model.greedy_decode(src, max_len=6).shape[0]
        2
    """

    def __init__(
        self,
        config: Seq2SeqConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = cfg = config
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.pe: Tensor | None
        self.src_embed = nn.Embedding(cfg.src_vocab, cfg.dim, **factory)
        self.tgt_embed = self.src_embed if cfg.share_embeddings else nn.Embedding(cfg.tgt_vocab, cfg.dim, **factory)
        self.src_pos: nn.Embedding | None = None
        self.tgt_pos: nn.Embedding | None = None
        if cfg.positions == "learned":
            self.src_pos = nn.Embedding(cfg.max_len, cfg.dim, **factory)
            self.tgt_pos = nn.Embedding(cfg.max_len, cfg.dim, **factory)
            self.register_buffer("pe", None, persistent=False)
        else:
            # Not persistent: it is a function of (max_len, dim), so checkpoints need not carry it.
            pe = sinusoidal_positions(cfg.max_len, cfg.dim, device=device).to(dtype or torch.get_default_dtype())
            self.register_buffer("pe", pe, persistent=False)  # (max_len, C)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg, **factory) for _ in range(cfg.enc_layers))
        self.encoder_norm = nn.LayerNorm(cfg.dim, **factory)
        self.decoder = nn.ModuleList(DecoderLayer(cfg, **factory) for _ in range(cfg.dec_layers))
        self.decoder_norm = nn.LayerNorm(cfg.dim, **factory)
        self.generator = nn.Linear(cfg.dim, cfg.tgt_vocab, **factory)
        self._init_weights()
        if cfg.tie_generator:
            self.generator.weight = self.tgt_embed.weight

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # N(0, 1/dim) then the sqrt(dim) scale: unit-variance token vectors; a tied generator gives unit-scale logits.
        for emb in dict.fromkeys([self.src_embed, self.tgt_embed]):  # once if shared; fixed order for seeding
            nn.init.normal_(emb.weight, std=self.config.dim**-0.5)
        for emb in (self.src_pos, self.tgt_pos):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)

    # ------------------------------------------------------------------------------------------------------------
    # sparsity declarations

    def sparse_filter(self, fqn: str, module: nn.Module) -> bool:
        """Every Linear is sparse except the generator (as in the papers): q, k, v, o of each attention, w1, w2."""
        return isinstance(module, nn.Linear | SparseLinear) and fqn != "generator"

    def sparse_junctions(self) -> list[Junction]:
        """Per attention ``(q, k)`` paired per head dimension and ``v -> o``; per feed-forward ``w1 -> w2``.

        In cross-attention ``q`` reads the decoder stream and ``k`` the encoder memory, but row ``d`` of ``q`` still
        multiplies row ``d`` of ``k`` in the scores, so the pairing is the same.
        """
        junctions: list[Junction] = []
        for name, module in self.named_modules():
            if isinstance(module, MultiHeadAttention):
                junctions += attention_junctions(name)
            elif isinstance(module, FeedForward):
                junctions.append(Junction(producers=(f"{name}.w1",), consumers=(f"{name}.w2",)))
        return junctions

    # ------------------------------------------------------------------------------------------------------------
    # forward

    def _check_tokens(self, x: Tensor, name: str) -> None:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
            got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be an integer tensor (B, length), got {got}")
        if x.shape[1] > self.config.max_len:
            raise ValueError(f"{name} has length {x.shape[1]} > config.max_len={self.config.max_len}")
        if x.shape[1] == 0:
            raise ValueError(f"{name} must have length >= 1")

    def _embed(self, tokens: Tensor, embed: nn.Embedding, pos: nn.Embedding | None, offset: int = 0) -> Tensor:
        T = tokens.shape[1]
        x = embed(tokens) * math.sqrt(self.config.dim)  # (B, T, C)
        if pos is not None:
            x = x + pos(torch.arange(offset, offset + T, device=tokens.device))  # (B, T, C)
        else:
            assert self.pe is not None  # sinusoidal positions: the table exists
            x = x + self.pe[offset : offset + T]  # (B, T, C)
        return self.drop(x)

    @staticmethod
    def _memory_mask(src_pad_mask: Tensor) -> Tensor:
        """Boolean attention mask ``(B, 1, 1, S)``, True where a key may be attended."""
        keep = ~src_pad_mask  # (B, S)
        # An all-pad source would mask every key, and softmax over nothing is NaN; let it attend to its pads instead
        # (its output is meaningless either way, but finite, so it cannot poison a batch through the loss or metrics).
        keep = keep | ~keep.any(dim=1, keepdim=True)  # (B, S)
        return keep[:, None, None, :]  # (B, 1, 1, S)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """Encodes a batch of source sentences.

        Args:
            src: Token ids ``(B, S)``, right-padded with ``pad_id``; ``S <= config.max_len``.

        Returns:
            ``(memory, src_pad_mask)``: the encoder output ``(B, S, dim)`` and a bool ``(B, S)``, True at pads.

        Example:
            >>> cfg = Seq2SeqConfig(src_vocab=20, tgt_vocab=20, dim=32, n_heads=4, enc_layers=1, dec_layers=1, ff=64)
            >>> memory, pad = Seq2SeqTransformer(cfg).encode(torch.tensor([[5, 6, 0]]))
            >>> memory.shape, pad.tolist()
            (torch.Size([1, 3, 32]), [[False, False, True]])
        """
        self._check_tokens(src, "src")
        src_pad_mask = src == self.config.pad_id  # (B, S)
        mask = self._memory_mask(src_pad_mask)  # (B, 1, 1, S)
        x = self._embed(src, self.src_embed, self.src_pos)  # (B, S, C)
        for layer in self.encoder:
            x = layer(x, mask)  # (B, S, C)
        return self.encoder_norm(x), src_pad_mask

    def decode(self, tgt_in: Tensor, memory: Tensor, src_pad_mask: Tensor) -> Tensor:
        """Next-token logits for every position of the (right-padded) decoder input.

        Args:
            tgt_in: Decoder input ids ``(B, T)``, starting with ``bos_id``; ``T <= config.max_len``.
            memory: Encoder output ``(B, S, dim)``.
            src_pad_mask: Bool ``(B, S)``, True at source pads.

        Returns:
            Logits ``(B, T, tgt_vocab)``; position ``t`` depends only on ``tgt_in[:, :t + 1]``.
        """
        self._check_tokens(tgt_in, "tgt_in")
        mask = self._memory_mask(src_pad_mask)  # (B, 1, 1, S)
        x = self._embed(tgt_in, self.tgt_embed, self.tgt_pos)  # (B, T, C)
        for layer in self.decoder:
            x = layer(x, memory, mask)  # (B, T, C)
        return self.generator(self.decoder_norm(x))  # (B, T, V)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits ``(B, T, tgt_vocab)`` for source ``src`` ``(B, S)`` and decoder input ``(B, T)``."""
        memory, src_pad_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_pad_mask)

    # ------------------------------------------------------------------------------------------------------------
    # decoding

    def _decode_len(self, max_len: int | None) -> int:
        if max_len is None:
            return self.config.max_len
        check_positive_int(max_len, "max_len")
        if max_len > self.config.max_len:
            # Generating token t reads decoder position t, and positions stop at config.max_len.
            raise ValueError(f"max_len={max_len} exceeds config.max_len={self.config.max_len}")
        return max_len

    def _next_log_probs(self, tokens: Tensor, t: int, caches: list[_LayerCache], memory_mask: Tensor) -> Tensor:
        """Log-probabilities ``(N, V)`` of the token after position ``t`` (input ``tokens`` ``(N, 1)``)."""
        x = self._embed(tokens, self.tgt_embed, self.tgt_pos, offset=t)  # (N, 1, C)
        for layer, cache in zip(self.decoder, caches):
            x = layer.step(x, cache, memory_mask)  # (N, 1, C)
        logits = self.generator(self.decoder_norm(x))[:, 0]  # (N, V)
        logp = F.log_softmax(logits.float(), dim=-1)  # (N, V)
        # pad and bos are never right as a next token (pads are ignored by the loss, bos is never a target); ruling them
        # out keeps outputs unambiguous: a pad in an output is always filler after eos.
        logp[:, [self.config.pad_id, self.config.bos_id]] = -torch.inf
        return logp

    def _start(self, src: Tensor, repeat: int = 1) -> tuple[list[_LayerCache], Tensor]:
        memory, src_pad_mask = self.encode(src)  # (B, S, C), (B, S)
        if repeat > 1:
            memory = memory.repeat_interleave(repeat, dim=0)  # (B * K, S, C)
            src_pad_mask = src_pad_mask.repeat_interleave(repeat, dim=0)  # (B * K, S)
        caches = [layer.init_cache(memory) for layer in self.decoder]
        return caches, self._memory_mask(src_pad_mask)

    def _trim(self, out: Tensor) -> Tensor:
        """Cuts the columns after the longest output (everything right of it is padding)."""
        lengths = (out != self.config.pad_id).sum(dim=1)  # (B,)
        return out[:, : max(int(lengths.max()) if lengths.numel() else 0, 1)]

    def greedy_decode(self, src: Tensor, max_len: int | None = None) -> Tensor:
        """Greedy decoding: the most probable next token until ``eos`` (per sentence) or ``max_len`` tokens.

        Runs in eval mode without autograd and restores the training flags afterwards. Keys and values of earlier
        positions are cached, so each step costs one position.

        Args:
            src: Source ids ``(B, S)``.
            max_len: Most tokens generated per sentence (eos included); default and upper bound ``config.max_len``.

        Returns:
            Token ids ``(B, L)`` without bos, each row ending at its ``eos`` (included) or at ``max_len`` tokens, then
            ``pad_id``; ``L`` is the longest row.

        Example:
            >>> cfg = Seq2SeqConfig(src_vocab=20, tgt_vocab=20, dim=32, n_heads=4, enc_layers=1, dec_layers=1, ff=64)
            >>> out = Seq2SeqTransformer(cfg).greedy_decode(torch.tensor([[5, 6, 7]]), max_len=4)
            >>> out.shape[0], out.shape[1] <= 4
            (1, True)
        """
        cfg = self.config
        steps = self._decode_len(max_len)
        with _eval_mode(self):
            caches, memory_mask = self._start(src)
            B = src.shape[0]
            out = torch.full((B, steps), cfg.pad_id, dtype=torch.long, device=src.device)  # (B, L)
            done = torch.zeros(B, dtype=torch.bool, device=src.device)  # (B,)
            last = torch.full((B, 1), cfg.bos_id, dtype=torch.long, device=src.device)  # (B, 1)
            for t in range(steps):
                nxt = self._next_log_probs(last, t, caches, memory_mask).argmax(dim=-1)  # (B,)
                out[:, t] = nxt.masked_fill(done, cfg.pad_id)
                done |= nxt == cfg.eos_id
                if bool(done.all()):
                    break
                last = nxt[:, None]  # (B, 1)
        return self._trim(out)

    def beam_search(
        self, src: Tensor, beam_size: int = 2, max_len: int | None = None, length_penalty: float = 1.0
    ) -> Tensor:
        """Beam search, batched over sentences (the papers report BLEU with beam 2).

        A sentence keeps ``beam_size`` hypotheses, ranked by summed log-probability. Each step, a live hypothesis
        is extended by every token and a finished one (ended by ``eos``) by nothing, at no cost, so finished and live
        hypotheses compete for the same slots; the best ``beam_size`` stay. Every hypothesis that finishes in the
        beam (or reaches ``max_len``) is scored ``log p / length ** length_penalty`` (length counts eos), and the
        best-scored one is the answer. A sentence stops when its whole beam is finished, or as soon as no live
        hypothesis can beat that best score any more (log p only falls, and the length is at most ``max_len``).
        With ``beam_size=1`` this is greedy decoding, token for token.

        Args:
            src: Source ids ``(B, S)``.
            beam_size: Hypotheses kept per sentence.
            max_len: Most tokens generated per sentence (eos included); default and upper bound ``config.max_len``.
            length_penalty: Exponent ``alpha`` of the length normalisation (0: summed log-probability, 1: per token).

        Returns:
            Token ids ``(B, L)`` as from :meth:`greedy_decode`.

        Example:
            >>> cfg = Seq2SeqConfig(src_vocab=20, tgt_vocab=20, dim=32, n_heads=4, enc_layers=1, dec_layers=1, ff=64)
            >>> model = Seq2SeqTransformer(cfg)
            >>> src = torch.tensor([[5, 6, 7], [8, 9, 0]])
            >>> torch.equal(model.beam_search(src, beam_size=1, max_len=5), model.greedy_decode(src, max_len=5))
            True
        """
        cfg = self.config
        K = check_positive_int(beam_size, "beam_size")
        L = self._decode_len(max_len)
        alpha = float(length_penalty)
        if not math.isfinite(alpha):
            raise ValueError(f"length_penalty must be finite, got {length_penalty!r}")
        with _eval_mode(self):
            caches, memory_mask = self._start(src, repeat=K)
            B, dev = src.shape[0], src.device
            V = cfg.tgt_vocab
            rows = torch.arange(B, device=dev)[:, None]  # (B, 1)
            # Only beam 0 is live at the start, so the first step does not fill the beam with copies of one token.
            scores = torch.full((B, K), -torch.inf, device=dev)  # (B, K) summed log-probabilities
            scores[:, 0] = 0.0
            finished = torch.zeros(B, K, dtype=torch.bool, device=dev)  # (B, K)
            hyps = torch.full((B, K, L), cfg.pad_id, dtype=torch.long, device=dev)  # (B, K, L)
            best_score = torch.full((B,), -torch.inf, device=dev)  # (B,) length-normalised
            best_hyp = torch.full((B, L), cfg.pad_id, dtype=torch.long, device=dev)  # (B, L)
            done = torch.zeros(B, dtype=torch.bool, device=dev)  # (B,)
            # A finished hypothesis continues with one candidate: itself, padded, at no cost.
            stay = torch.full((V,), -torch.inf, device=dev)  # (V,)
            stay[cfg.pad_id] = 0.0
            last = torch.full((B * K, 1), cfg.bos_id, dtype=torch.long, device=dev)  # (B*K, 1)
            for t in range(L):
                logp = self._next_log_probs(last, t, caches, memory_mask).view(B, K, V)  # (B, K, V)
                logp = torch.where(finished[:, :, None], stay, logp)  # (B, K, V)
                cand = (scores[:, :, None] + logp).view(B, K * V)  # (B, K*V)
                scores, idx = cand.topk(K, dim=1)  # (B, K) each, best first
                beam, tok = idx // V, idx % V  # (B, K) each
                hyps = hyps[rows, beam]  # (B, K, L)
                hyps[:, :, t] = tok
                was_finished = finished[rows, beam]  # (B, K)
                finished = was_finished | (tok == cfg.eos_id)  # (B, K)
                # Score what finishes now (length t + 1); at max_len the live hypotheses finish as they are.
                ending = (finished & ~was_finished) | (~finished if t == L - 1 else torch.zeros_like(finished))
                ending &= torch.isfinite(scores) & ~done[:, None]  # (B, K)
                normed = (scores / float(t + 1) ** alpha).masked_fill(~ending, -torch.inf)  # (B, K)
                top, j = normed.max(dim=1)  # (B,) each
                better = top > best_score  # (B,)
                best_score = torch.where(better, top, best_score)
                best_hyp = torch.where(better[:, None], hyps[rows[:, 0], j], best_hyp)  # (B, L)
                # A live hypothesis ends with log p <= its score now and a length in [t + 2, L]; this bounds its score.
                live = scores.masked_fill(finished, -torch.inf).amax(dim=1)  # (B,)
                bound = torch.maximum(live / float(min(t + 2, L)) ** alpha, live / float(L) ** alpha)  # (B,)
                done |= finished.all(dim=1) | (best_score >= bound)
                if t == L - 1 or bool(done.all()):
                    break
                last = tok.reshape(B * K, 1)  # (B*K, 1)
                origin = (rows * K + beam).reshape(-1)  # (B*K,) the row each new hypothesis continues
                for cache in caches:
                    cache.reorder_(origin)
        return self._trim(best_hyp)

    def sequence_scores(self, src: Tensor, hyps: Tensor, length_penalty: float = 1.0) -> Tensor:
        """The score beam search gives hypotheses: ``sum log p(token) / length ** length_penalty``.

        Each hypothesis runs up to and including its first ``eos`` (or to its last non-pad token), as returned by
        :meth:`greedy_decode` and :meth:`beam_search`. Computed teacher-forced, in eval mode, without autograd.

        Args:
            src: Source ids ``(B, S)``.
            hyps: Target ids ``(B, L)`` without bos.
            length_penalty: As in :meth:`beam_search`.

        Returns:
            Scores ``(B,)`` (float32).

        Example:
            >>> cfg = Seq2SeqConfig(src_vocab=20, tgt_vocab=20, dim=32, n_heads=4, enc_layers=1, dec_layers=1, ff=64)
            >>> model = Seq2SeqTransformer(cfg)
            >>> src = torch.tensor([[5, 6, 7]])
            >>> bool(model.sequence_scores(src, model.greedy_decode(src, max_len=5)) <= 0)
            True
        """
        cfg = self.config
        self._check_tokens(hyps, "hyps")
        hyps = hyps.long()
        bos = torch.full_like(hyps[:, :1], cfg.bos_id)  # (B, 1)
        tgt_in = torch.cat([bos, hyps[:, :-1]], dim=1)  # (B, L)
        with _eval_mode(self):
            logp = F.log_softmax(self(src, tgt_in).float(), dim=-1)  # (B, L, V)
        token_logp = logp.gather(2, hyps[:, :, None])[:, :, 0]  # (B, L)
        # Count a token if no eos came before it and it is not padding.
        eos_before = torch.cumsum((hyps == cfg.eos_id).long(), dim=1) - (hyps == cfg.eos_id).long()  # (B, L)
        counted = (eos_before == 0) & (hyps != cfg.pad_id)  # (B, L)
        total = (token_logp * counted).sum(dim=1)  # (B,)
        return total / counted.sum(dim=1).clamp_min(1).float() ** float(length_penalty)


def label_smoothed_loss(logits: Tensor, target: Tensor, pad_id: int, smoothing: float = 0.1) -> Tensor:
    """Label-smoothed cross-entropy, averaged over the non-pad target tokens.

    Args:
        logits: ``(B, T, V)`` (or ``(N, V)``).
        target: ``(B, T)`` (or ``(N,)``) token ids; ``pad_id`` positions are ignored.
        pad_id: The padding id.
        smoothing: Probability mass spread uniformly over the vocabulary, in [0, 1).

    Returns:
        A scalar; 0 (still attached to ``logits``) when every target is padding, where a plain mean would be NaN.

    Example:
        >>> logits = torch.zeros(1, 3, 5)
        >>> round(float(label_smoothed_loss(logits, torch.tensor([[3, 4, 0]]), pad_id=0)), 4)  # log 5
        1.6094
    """
    check_fraction(smoothing, "smoothing", closed_high=False)
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (N, V)
    flat_target = target.reshape(-1)  # (N,)
    if flat_logits.shape[0] != flat_target.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} disagree on tokens")
    if not bool((flat_target != pad_id).any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits, flat_target, ignore_index=pad_id, label_smoothing=smoothing)
