"""A LLaMA-style decoder-only language model whose sparse layers and percolation junctions are declared.

Pre-norm blocks (RMSNorm), rotary position embeddings, causal self-attention with separate ``q, k, v, o`` projections
and a SwiGLU MLP with separate ``gate, up, down`` projections, all without bias. As in the CHTs / CHTss LLaMA
experiments, the seven projections of every block are sparse; the token embedding, the norms and ``lm_head`` stay
dense. Percolation junctions pair Q with K per head dimension, chain V into O, and pair gate with up before down.

Example:
    >>> model = LlamaLM.from_name("llama-tiny", vocab_size=100)
    >>> model(torch.zeros(2, 16, dtype=torch.long)).shape
    torch.Size([2, 16, 100])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_fraction, check_positive_int, unknown_name_error
from ..topology.percolation import Junction, attention_junctions

__all__ = [
    "LLAMA_SIZES",
    "Attention",
    "Block",
    "LlamaConfig",
    "LlamaLM",
    "RMSNorm",
    "RotaryEmbedding",
    "SwiGLU",
    "apply_rope",
    "llama_config",
    "rope_cache",
]

_ATTN_LAYERS = ("q", "k", "v", "o")
_MLP_LAYERS = ("gate", "up", "down")


@dataclass
class LlamaConfig:
    """Shape and hyperparameters of :class:`LlamaLM`; the defaults are the LLaMA-60M of the CHTs24 experiments.

    Example:
        >>> LlamaConfig(vocab_size=32000).head_dim
        64
    """

    vocab_size: int  # tokens in the vocabulary (rows of the embedding, outputs of lm_head)
    max_seq_len: int = 256  # longest sequence; the RoPE tables are precomputed up to here (the papers train at 256)
    dim: int = 512  # C: width of the residual stream
    n_layers: int = 8  # number of decoder blocks
    n_heads: int = 8  # nh: attention heads; head size hs = dim / n_heads
    intermediate: int = 1280  # hidden width of the SwiGLU MLP (gate and up outputs, down inputs)
    norm_eps: float = 1e-6  # added to the mean square in RMSNorm
    rope_theta: float = 10000.0  # RoPE base: frequency of rotation plane i is rope_theta ** (-2 i / hs)
    tie_embeddings: bool = False  # share one matrix between the token embedding and lm_head
    dropout: float = 0.0  # on embeddings, attention probabilities and residual branches (LLaMA pre-training uses 0)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_seq_len", "dim", "n_layers", "n_heads", "intermediate"):
            check_positive_int(getattr(self, name), name)
        if self.dim % self.n_heads:
            raise ValueError(f"dim must be divisible by n_heads, got dim={self.dim} and n_heads={self.n_heads}")
        if self.head_dim % 2:
            raise ValueError(
                f"dim / n_heads (the head size) must be even for rotary embeddings, which rotate pairs of "
                f"dimensions; got dim={self.dim}, n_heads={self.n_heads}, head size {self.head_dim}"
            )
        for name in ("norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        check_fraction(self.dropout, "dropout", closed_high=False)

    @property
    def head_dim(self) -> int:
        """hs: size of one attention head."""
        return self.dim // self.n_heads


# Named sizes. Only the body is fixed here: the vocabulary comes from the tokenizer (llama_config's vocab_size).
LLAMA_SIZES: dict[str, dict[str, Any]] = {
    "llama-tiny": {"dim": 64, "n_layers": 2, "n_heads": 4, "intermediate": 172},  # unit tests on the CPU
    "llama-20m": {"dim": 256, "n_layers": 4, "n_heads": 4, "intermediate": 688},  # CPU demos, quick GPU sweeps
    "llama-60m": {"dim": 512, "n_layers": 8, "n_heads": 8, "intermediate": 1280},  # the CHTs24 LLaMA-60M
    "llama-130m": {"dim": 768, "n_layers": 12, "n_heads": 12, "intermediate": 2048},
}


def llama_config(name: str, vocab_size: int, **overrides: Any) -> LlamaConfig:
    """The :class:`LlamaConfig` of a named size (see ``LLAMA_SIZES``), with any field overridden.

    Args:
        name: One of ``LLAMA_SIZES``: ``"llama-tiny"``, ``"llama-20m"``, ``"llama-60m"``, ``"llama-130m"``.
        vocab_size: Tokens in the vocabulary.
        **overrides: Any other :class:`LlamaConfig` field, e.g. ``max_seq_len=512``.

    Raises:
        ValueError: On an unknown size or field (naming the closest valid one) or an invalid value.

    Example:
        >>> llama_config("llama-60m", 32000, max_seq_len=512).max_seq_len
        512
    """
    if name not in LLAMA_SIZES:
        raise unknown_name_error("LLaMA size", name, LLAMA_SIZES)
    valid = [f.name for f in fields(LlamaConfig) if f.name != "vocab_size"]
    for key in overrides:
        if key not in valid:
            raise unknown_name_error("LlamaConfig field", key, valid)
    return LlamaConfig(vocab_size=vocab_size, **{**LLAMA_SIZES[name], **overrides})


class RMSNorm(nn.Module):
    """Root-mean-square layer norm: ``x / sqrt(mean(x^2) + eps) * weight`` over the last dimension, no bias.

    Example:
        >>> RMSNorm(4)(torch.full((1, 4), 3.0))
        tensor([[1.0000, 1.0000, 1.0000, 1.0000]], grad_fn=<MulBackward0>)
    """

    def __init__(
        self, dim: int, eps: float = 1e-6, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        # The mean square is taken in float32: in bf16 its rounding error is visible in the loss.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight


def rope_cache(
    head_dim: int, max_seq_len: int, theta: float = 10000.0, *, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Cosine and sine tables of rotary position embeddings, in the rotate-half convention.

    Plane ``i`` (``0 <= i < hs/2``) is made of dimensions ``i`` and ``i + hs/2`` and turns by angle
    ``m * theta ** (-2 i / hs)`` at position ``m``; both dimensions of a plane share its column in the tables.

    Args:
        head_dim: hs, the (even) head size.
        max_seq_len: Number of positions.
        theta: The RoPE base.
        device: Where to build the tables.

    Returns:
        ``(cos, sin)``, each float32 of shape ``(max_seq_len, head_dim)``.

    Example:
        >>> cos, sin = rope_cache(4, 3)
        >>> cos.shape, float(sin[1, 0])  # position 1, plane 0 turns by 1 radian
        (torch.Size([3, 4]), 0.8414709568023682)
    """
    half = head_dim // 2
    inv_freq = theta ** (-torch.arange(half, dtype=torch.float64, device=device) * 2 / head_dim)  # (hs/2,)
    # Angles in float64: at position 4096 float32 loses about 1e-4 rad, which the dot product then amplifies.
    angle = torch.arange(max_seq_len, dtype=torch.float64, device=device)[:, None] * inv_freq[None, :]  # (T, hs/2)
    angle = torch.cat([angle, angle], dim=-1)  # (T, hs): dimensions i and i + hs/2 share plane i's angle
    return angle.cos().float(), angle.sin().float()


def _rotate_half(x: Tensor) -> Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last dimension: a quarter turn of every plane."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotates each plane ``(i, i + hs/2)`` of every head by its position's angle (rotate-half convention).

    Args:
        x: Queries or keys ``(B, nh, T, hs)``.
        cos: ``(T, hs)`` rows of :func:`rope_cache` for the positions of ``x``.
        sin: Likewise.

    Returns:
        The rotated tensor, same shape and dtype as ``x``.

    Example:
        >>> cos, sin = rope_cache(2, 2)
        >>> apply_rope(torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]]), cos, sin)[0, 0, 1]  # position 1: cos 1, sin 1
        tensor([0.5403, 0.8415])
    """
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)  # (B, nh, T, hs)


class RotaryEmbedding(nn.Module):
    """Holds the RoPE tables as non-persistent buffers (rebuilt from the config, so not in ``state_dict()``).

    Example:
        >>> rope = RotaryEmbedding(16, max_seq_len=8)
        >>> rope(torch.randn(1, 2, 8, 16)).shape
        torch.Size([1, 2, 8, 16])
    """

    cos: Tensor
    sin: Tensor

    def __init__(
        self, head_dim: int, max_seq_len: int, theta: float = 10000.0, *, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        cos, sin = rope_cache(head_dim, max_seq_len, theta, device=device)
        self.register_buffer("cos", cos, persistent=False)  # (max_seq_len, hs)
        self.register_buffer("sin", sin, persistent=False)  # (max_seq_len, hs)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[-2]
        return apply_rope(x, self.cos[:T].float(), self.sin[:T].float())  # (B, nh, T, hs)


class Attention(nn.Module):
    """Causal multi-head self-attention with rotary embeddings and separate, bias-free ``q, k, v, o`` projections.

    Row ``h * hs + d`` of ``q``, ``k`` and ``v`` (and column ``h * hs + d`` of ``o``) is dimension ``d`` of head
    ``h``: the indexing the percolation junctions rely on.

    Example:
        >>> attn = Attention(LlamaConfig(vocab_size=10, dim=32, n_heads=4))
        >>> attn(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(
        self, config: LlamaConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        C = config.dim
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        kw: dict[str, Any] = {"bias": False, "device": device, "dtype": dtype}
        self.q = nn.Linear(C, C, **kw)
        self.k = nn.Linear(C, C, **kw)
        self.v = nn.Linear(C, C, **kw)
        self.o = nn.Linear(C, C, **kw)
        self.rope = RotaryEmbedding(config.head_dim, config.max_seq_len, config.rope_theta, device=device)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        nh, hs = self.n_heads, self.head_dim
        q = self.q(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        q, k = self.rope(q), self.rope(k)  # (B, nh, T, hs): positions enter only through q . k
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.o(y))  # (B, T, C)


class SwiGLU(nn.Module):
    """The gated MLP of LLaMA: ``down(silu(gate(x)) * up(x))``, bias-free.

    Example:
        >>> SwiGLU(32, 86)(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(
        self,
        dim: int,
        intermediate: int,
        dropout: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"bias": False, "device": device, "dtype": dtype}
        self.gate = nn.Linear(dim, intermediate, **kw)
        self.up = nn.Linear(dim, intermediate, **kw)
        self.down = nn.Linear(intermediate, dim, **kw)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.gate(x)) * self.up(x)  # (B, T, intermediate)
        return self.dropout(self.down(h))  # (B, T, C)


class Block(nn.Module):
    """A pre-norm decoder block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    Example:
        >>> Block(LlamaConfig(vocab_size=10, dim=32, n_heads=4, intermediate=86))(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(
        self, config: LlamaConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.attn_norm = RMSNorm(config.dim, config.norm_eps, **kw)
        self.attn = Attention(config, **kw)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps, **kw)
        self.mlp = SwiGLU(config.dim, config.intermediate, config.dropout, **kw)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x))  # (B, T, C)
        return x + self.mlp(self.mlp_norm(x))  # (B, T, C)


class LlamaLM(nn.Module):
    """A LLaMA-style decoder-only language model; the seven projections of every block are declared sparse.

    Args:
        config: The model's shape (see :func:`llama_config` for the named sizes).
        device: Where to create the parameters (``"meta"`` builds the structure without memory).
        dtype: Parameter dtype.

    Example:
        >>> model = LlamaLM(llama_config("llama-tiny", vocab_size=50))
        >>> logits = model(torch.randint(0, 50, (2, 8)))  # (B, T, vocab)
        >>> logits.shape, len([n for n, m in model.named_modules() if model.sparse_filter(n, m)])
        (torch.Size([2, 8, 50]), 14)
    """

    def __init__(
        self, config: LlamaConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"config must be a LlamaConfig (see llama_config), got {type(config).__name__}")
        self.config = config
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.tok_emb = nn.Embedding(config.vocab_size, config.dim, **kw)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, **kw) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps, **kw)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False, **kw)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self._sparse_names = frozenset(
            [f"blocks.{i}.attn.{p}" for i in range(config.n_layers) for p in _ATTN_LAYERS]
            + [f"blocks.{i}.mlp.{p}" for i in range(config.n_layers) for p in _MLP_LAYERS]
        )
        self.reset_parameters()

    @classmethod
    def from_name(
        cls,
        name: str,
        vocab_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **overrides: Any,
    ) -> LlamaLM:
        """A model of a named size (see ``LLAMA_SIZES``); ``overrides`` are :class:`LlamaConfig` fields.

        Example:
            >>> LlamaLM.from_name("llama-60m", 32000, device="meta").config.dim
            512
        """
        return cls(llama_config(name, vocab_size, **overrides), device=device, dtype=dtype)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 / LLaMA initialisation: N(0, 0.02) for linears and the embedding, norms at 1.

        The residual projections (``o``, ``down``) get std ``0.02 / sqrt(2 n_layers)`` so the residual stream's
        variance does not grow with depth. (A sparsifier using SWI re-initialises the sparse layers anyway.)
        """
        std = 0.02
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                last = name.rpartition(".")[2]
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if last in ("o", "down") else std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def forward(self, idx: Tensor) -> Tensor:
        """Next-token logits.

        Args:
            idx: Token ids ``(B, T)`` with ``T <= max_seq_len``.

        Returns:
            Logits ``(B, T, vocab_size)``; position ``t`` depends only on tokens ``0..t``.

        Raises:
            ValueError: If ``idx`` is not 2-D or ``T > max_seq_len``.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be token ids shaped (B, T), got shape {tuple(idx.shape)}")
        T = idx.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(
                f"sequence length T={T} exceeds max_seq_len={self.config.max_seq_len}; "
                f"build the model with a larger max_seq_len or feed shorter sequences"
            )
        x = self.drop(self.tok_emb(idx))  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.lm_head(self.norm(x))  # (B, T, vocab)

    def sparse_filter(self, fqn: str, module: nn.Module) -> bool:
        """The ``q, k, v, o, gate, up, down`` projections of every block are sparse; all else stays dense."""
        return fqn in self._sparse_names

    def sparse_junctions(self) -> list[Junction]:
        """The hidden neurons shared by sparse layers, per block, for active-neuron percolation.

        - ``(q, k)``: row ``d`` of ``q`` and row ``d`` of ``k`` multiply each other in the attention score, so a head
          dimension must be alive in both. (Under RoPE, dimension ``d`` also meets its rotation partner
          ``d +- hs/2`` of the other projection; the junction pairs the same index only, per the CHT reference.)
        - ``(v) -> (o)``: attention mixes positions, not dimensions, so value dimension ``d`` reaches only column
          ``d`` of ``o``.
        - ``(gate, up) -> (down)``: ``silu(gate) * up`` is 0 when either row is empty, and ``down`` consumes it.

        The residual stream (inputs of ``q, k, v, gate, up``, outputs of ``o, down``) is not a junction: the skip
        connections keep every residual dimension alive.

        Example:
            >>> LlamaLM.from_name("llama-tiny", 10, device="meta").sparse_junctions()[1]
            Junction(producers=('blocks.0.attn.v',), consumers=('blocks.0.attn.o',))
        """
        junctions = []
        for i in range(self.config.n_layers):
            attn, mlp = f"blocks.{i}.attn", f"blocks.{i}.mlp"
            junctions += [
                *attention_junctions(attn),
                Junction(producers=(f"{mlp}.gate", f"{mlp}.up"), consumers=(f"{mlp}.down",)),
            ]
        return junctions

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Number of parameters, each shared tensor counted once.

        Args:
            non_embedding: Leave out the vocabulary matrices (token embedding and ``lm_head``, one matrix when tied),
                so the count is that of the transformer body, independent of the tokenizer.

        Counts are dense: a sparse layer counts its full weight (its links are in ``DynamicSparsifier.stats()``).

        Example:
            >>> LlamaLM.from_name("llama-tiny", 50).num_parameters()
            99136
        """
        params = {id(p): p for p in self.parameters()}
        if non_embedding:
            params.pop(id(self.tok_emb.weight), None)
            params.pop(id(self.lm_head.weight), None)
        return sum(p.numel() for p in params.values())
