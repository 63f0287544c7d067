"""The baselines the RSGN paper compares against, for sequence classification of ``(B, T, D)`` inputs.

The paper (seed 004, section VI.1.3) names four baselines and gives their parameter counts (Tables 1 and 2). Those
counts pin the sizes down exactly, so the defaults here reproduce them:

==================  ======================================================  ============  ============
baseline            paper's description -> what is built here                hierarchical  long-range
                                                                             T=64, 20 cls  T=128, 10 cls
==================  ======================================================  ============  ============
mlp                 "flattened input with two hidden layers (ReLU)"          281,364       (not given)
                    -> flatten (T*D) -> 128 -> 128 -> classes                              542,218 here
transformer         "4 heads and 2 layers" -> D -> 128, 2 encoder layers     403,348       600,330
                    (d=128, FFN 512), no learned positions, mean pool                      (= 3 layers)
sparse_transformer  "local (window 5) plus strided (every 4)" -> same        403,348       (not given)
                    sizes, a fixed boolean attention mask
bilstm              "bidirectional LSTM with 2 layers" -> hidden 128,        566,292       563,722
                    Linear(256 -> classes) on the concatenated final states
==================  ======================================================  ============  ============

Two things the counts say that the text does not: the Transformer has no learned position table (a learned one
would add ``T * 128`` parameters), so fixed sinusoidal positions are the default here (``positions="learned"`` is
available); and the long-range Transformer's 600,330 is exactly three encoder layers, not two
(``SequenceTransformer(32, 10, 128, layers=3)``). The defaults keep the text's two layers.

The paper does *not* compare at equal budgets: its baselines have 7-14x the RSGN's 41,672 parameters. For a
budget-matched comparison, :func:`budget_matched_kwargs` (or ``build_sequence_baseline(..., budget=41_672)``) picks
the width whose parameter count is closest to a budget.

Example:
    >>> model = build_sequence_baseline("transformer", 32, 20, 64)
    >>> count_parameters(model)
    403348
    >>> model(torch.randn(2, 64, 32)).shape
    torch.Size([2, 20])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_fraction, check_positive_int, unknown_name_error
from .seq2seq import sinusoidal_positions

__all__ = [
    "PAPER_PARAMETER_COUNTS",
    "SEQUENCE_BASELINES",
    "BiLSTM",
    "SequenceAttention",
    "SequenceMLP",
    "SequenceTransformer",
    "SequenceTransformerBlock",
    "SparseTransformer",
    "budget_matched_kwargs",
    "build_sequence_baseline",
    "count_parameters",
    "sparse_attention_mask",
]

# Tables 1 and 2 of the paper: task -> baseline -> parameter count (counts the paper does not give are absent).
PAPER_PARAMETER_COUNTS: dict[str, dict[str, int]] = {
    "hierarchical": {"mlp": 281_364, "transformer": 403_348, "sparse_transformer": 403_348, "bilstm": 566_292},
    "long_range": {"transformer": 600_330, "bilstm": 563_722},
}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (shared tensors counted once).

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _check_input(x: Tensor, input_dim: int, seq_len: int | None) -> None:
    if x.dim() != 3 or x.shape[-1] != input_dim:
        raise ValueError(f"expected input of shape (B, T, {input_dim}), got {tuple(x.shape)}")
    if seq_len is not None and x.shape[1] != seq_len:
        raise ValueError(f"expected sequences of length seq_len={seq_len}, got T={x.shape[1]}")


# ----------------------------------------------------------------------------------------------------------------- MLP


class SequenceMLP(nn.Module):
    """An MLP on the whole sequence: the paper's "flattened input with two hidden layers (ReLU activation)".

    ``readout="flatten"`` (the paper's, the default) feeds the ``T * D`` flattened sequence to the MLP, so the model
    is tied to ``seq_len``. ``readout="pool"`` feeds ``[mean_t x_t, x_0, x_{T-1}]`` (``3 * D`` features) instead: a
    length-agnostic variant, with far fewer parameters, that still sees both ends of the sequence.

    Args:
        input_dim: features per token ``D``.
        num_classes: output classes.
        seq_len: sequence length ``T`` (required by ``readout="flatten"``; checked on input).
        hidden: widths of the hidden layers (the paper: two layers of 128, giving its 281,364 parameters).
        readout: ``"flatten"`` or ``"pool"``.
        dropout: dropout after each hidden activation.

    Example:
        >>> model = SequenceMLP(32, 20, 64)
        >>> model(torch.randn(2, 64, 32)).shape, count_parameters(model)
        (torch.Size([2, 20]), 281364)
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        seq_len: int | None = None,
        hidden: Sequence[int] = (128, 128),
        readout: Literal["flatten", "pool"] = "flatten",
        dropout: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        if readout not in ("flatten", "pool"):
            raise ValueError(f"readout must be 'flatten' or 'pool', got {readout!r}")
        if readout == "flatten" and seq_len is None:
            raise ValueError("readout='flatten' needs seq_len (the flattened input has seq_len * input_dim features)")
        self.seq_len = None if seq_len is None else check_positive_int(seq_len, "seq_len")
        self.readout = readout
        check_fraction(dropout, "dropout")
        widths = [self.seq_len * input_dim if readout == "flatten" else 3 * input_dim]  # type: ignore[operator]
        widths += [check_positive_int(h, "hidden") for h in hidden]
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out, **kw), nn.ReLU(), nn.Dropout(dropout)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], num_classes, **kw)

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer's activations, ``(B, hidden[-1])``."""
        _check_input(x, self.input_dim, self.seq_len if self.readout == "flatten" else None)
        if self.readout == "flatten":
            z = x.flatten(1)  # (B, T*D)
        else:
            z = torch.cat([x.mean(1), x[:, 0], x[:, -1]], dim=-1)  # (B, 3D)
        return self.body(z)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for ``x`` of shape ``(B, T, D)``."""
        return self.head(self.features(x))


# ------------------------------------------------------------------------------------------------------- Transformers


def sparse_attention_mask(
    seq_len: int,
    window: int = 5,
    stride: int = 4,
    mode: Literal["global", "relative"] = "global",
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """The fixed local + strided attention pattern, a boolean ``(T, T)`` mask where ``True`` means "may attend".

    Local: query ``i`` sees keys ``j`` with ``|i - j| <= window // 2`` (window 5 -> ``|i - j| <= 2``; the paper's
    "window 5" read as 5 positions centred on the query, since the classifier is not causal).

    Strided, ``mode="global"`` (the default): every ``stride``-th position (``j % stride == 0``) is a global
    position: every query sees it, and it sees every key (the paper's "every 4th position").
    ``mode="relative"``: Child et al.'s (2019) strided pattern made two-sided: ``i`` sees ``j`` when
    ``(i - j) % stride == 0``.

    Neither is very sparse at these lengths: the fraction of allowed pairs is 0.48 (``"global"``) and 0.31
    (``"relative"``) for T=64, 0.46 and 0.28 for T=128, because a quarter of the positions are global (or, relative,
    every query sees a quarter of the keys).

    Example:
        >>> sparse_attention_mask(6, window=3, stride=4).int()
        tensor([[1, 1, 1, 1, 1, 1],
                [1, 1, 1, 0, 1, 0],
                [1, 1, 1, 1, 1, 0],
                [1, 0, 1, 1, 1, 0],
                [1, 1, 1, 1, 1, 1],
                [1, 0, 0, 0, 1, 1]], dtype=torch.int32)
    """
    check_positive_int(seq_len, "seq_len")
    check_positive_int(window, "window")
    check_positive_int(stride, "stride")
    if window % 2 == 0:
        raise ValueError(f"window must be odd (centred on the query), got {window}")
    pos = torch.arange(seq_len, device=device)
    i, j = pos[:, None], pos[None, :]  # (T, 1), (1, T)
    mask = (i - j).abs() <= window // 2  # (T, T): local band
    if mode == "global":
        glob = pos % stride == 0  # (T,)
        mask = mask | glob[None, :] | glob[:, None]
    elif mode == "relative":
        mask = mask | ((i - j) % stride == 0)
    else:
        raise ValueError(f"mode must be 'global' or 'relative', got {mode!r}")
    return mask


class SequenceAttention(nn.Module):
    """Multi-head self-attention (not causal) with a fused ``qkv`` projection and an optional boolean mask.

    The fused projection has the same parameters as ``nn.MultiheadAttention`` (``4 d^2 + 4 d``), which is what the
    paper's counts imply.

    Example:
        >>> SequenceAttention(64, 4)(torch.randn(2, 5, 64)).shape
        torch.Size([2, 5, 64])
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim, **kw)
        self.proj = nn.Linear(dim, dim, **kw)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``x`` ``(B, T, C)``; ``attn_mask`` ``(T, T)`` boolean, ``True`` = query (row) may attend key (column)."""
        B, T, C = x.shape
        nh, hs = self.heads, C // self.heads
        q, k, v = self.qkv(x).view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)  # each (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class SequenceTransformerBlock(nn.Module):
    """A pre-norm encoder layer: ``x + attn(LN(x))``, then ``x + FFN(LN(x))`` (FFN ``d -> mlp_ratio d -> d``, GELU).

    Example:
        >>> SequenceTransformerBlock(64, 4)(torch.randn(2, 5, 64)).shape
        torch.Size([2, 5, 64])
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.ln1 = nn.LayerNorm(dim, **kw)
        self.attn = SequenceAttention(dim, heads, dropout, **kw)
        self.ln2 = nn.LayerNorm(dim, **kw)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim, **kw), nn.GELU(), nn.Linear(mlp_ratio * dim, dim, **kw), nn.Dropout(dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), attn_mask))  # (B, T, C)
        return x + self.mlp(self.ln2(x))  # (B, T, C)


class SequenceTransformer(nn.Module):
    """The paper's Transformer baseline: input projection, positions, pre-norm encoder layers, mean-pooled readout.

    With the defaults (``dim=128``, FFN 512, no learned positions) the parameter count is the paper's 403,348 for
    ``(T=64, D=32, 20 classes)``; ``layers=3`` gives its 600,330 for ``(T=128, D=32, 10 classes)``.

    Args:
        input_dim: features per token ``D``.
        num_classes: output classes.
        seq_len: the longest sequence accepted (sizes the position code).
        dim: model width.
        heads: attention heads (the paper: 4).
        layers: encoder layers (the paper's text: 2).
        mlp_ratio: FFN width as a multiple of ``dim``.
        positions: ``"sinusoidal"`` (fixed, no parameters: matches the paper's counts), ``"learned"`` (a
            ``(seq_len, dim)`` table, initialised N(0, 0.02)) or ``"none"`` (the model is then permutation invariant).
        dropout: attention-output, FFN and embedding dropout.

    Example:
        >>> model = SequenceTransformer(32, 20, 64)
        >>> model(torch.randn(2, 64, 32)).shape, count_parameters(model)
        (torch.Size([2, 20]), 403348)
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        seq_len: int,
        dim: int = 128,
        heads: int = 4,
        layers: int = 2,
        mlp_ratio: int = 4,
        positions: Literal["sinusoidal", "learned", "none"] = "sinusoidal",
        dropout: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.seq_len = check_positive_int(seq_len, "seq_len")
        check_positive_int(dim, "dim")
        check_positive_int(heads, "heads")
        check_positive_int(layers, "layers")
        check_fraction(dropout, "dropout")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.embed = nn.Linear(input_dim, dim, **kw)
        self.positions = positions
        if positions == "learned":
            self.pos = nn.Parameter(torch.randn(seq_len, dim, **kw) * 0.02)
        elif positions == "sinusoidal":
            # A buffer, not a parameter: moves with .to() but is not counted or trained (and not saved).
            self.register_buffer(
                "pos", sinusoidal_positions(seq_len, dim, device=device).to(dtype or torch.float32), persistent=False
            )
        elif positions == "none":
            self.pos = None
        else:
            raise ValueError(f"positions must be 'sinusoidal', 'learned' or 'none', got {positions!r}")
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            SequenceTransformerBlock(dim, heads, mlp_ratio, dropout, **kw) for _ in range(layers)
        )
        self.head = nn.Linear(dim, num_classes, **kw)

    def attention_mask(self, T: int, device: torch.device) -> Tensor | None:
        """The boolean ``(T, T)`` mask every layer uses; ``None`` (dense attention) here, a pattern in subclasses."""
        return None

    def features(self, x: Tensor) -> Tensor:
        """The mean over positions of the last layer's outputs, ``(B, dim)``."""
        _check_input(x, self.input_dim, None)
        T = x.shape[1]
        if T > self.seq_len:
            raise ValueError(f"sequence of length {T} is longer than seq_len={self.seq_len}")
        h = self.embed(x)  # (B, T, C)
        if self.pos is not None:
            h = h + self.pos[:T]
        h = self.drop(h)
        mask = self.attention_mask(T, x.device)
        for block in self.blocks:
            h = block(h, mask)  # (B, T, C)
        return h.mean(1)  # (B, C)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for ``x`` of shape ``(B, T, D)``, ``T <= seq_len``."""
        return self.head(self.features(x))


class SparseTransformer(SequenceTransformer):
    """The paper's Sparse Transformer baseline: :class:`SequenceTransformer` with a fixed local + strided mask.

    The mask (see :func:`sparse_attention_mask`: local window 5, every 4th position global by default) is built once
    per ``(T, device)`` and cached. The pattern has no parameters, so the count equals the dense Transformer's, as in
    the paper (403,348 both).

    Args:
        window: local window width, odd (the paper: 5).
        stride: stride of the strided part (the paper: 4).
        stride_mode: ``"global"`` or ``"relative"``, see :func:`sparse_attention_mask`.
        **kwargs: the :class:`SequenceTransformer` arguments.

    Example:
        >>> model = SparseTransformer(32, 20, 64)
        >>> model(torch.randn(2, 64, 32)).shape
        torch.Size([2, 20])
        >>> round(model.attention_mask(64, torch.device("cpu")).float().mean().item(), 2)  # fraction of pairs seen
        0.48
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        seq_len: int,
        *args: Any,
        window: int = 5,
        stride: int = 4,
        stride_mode: Literal["global", "relative"] = "global",
        **kwargs: Any,
    ) -> None:
        super().__init__(input_dim, num_classes, seq_len, *args, **kwargs)
        sparse_attention_mask(1, window, stride, stride_mode)  # validates the arguments now, not at the first call
        self.window, self.stride, self.stride_mode = window, stride, stride_mode
        self._masks: dict[tuple[int, torch.device], Tensor] = {}

    def attention_mask(self, T: int, device: torch.device) -> Tensor:
        key = (T, torch.device(device))
        if key not in self._masks:
            self._masks[key] = sparse_attention_mask(T, self.window, self.stride, self.stride_mode, device=device)
        return self._masks[key]


# --------------------------------------------------------------------------------------------------------------- LSTM


class BiLSTM(nn.Module):
    """The paper's LSTM baseline: a 2-layer bidirectional ``nn.LSTM`` and a linear head.

    ``readout="final"`` (default) concatenates the last layer's final forward state (which has read the sequence up
    to its last token) and final backward state (read back to its first token), ``(B, 2 hidden)``; ``"mean"``
    averages the last layer's outputs over time. Both give the paper's counts (566,292 for 20 classes, 563,722 for
    10, with ``hidden=128``); the paper does not say which readout it used.

    Args:
        input_dim: features per token ``D``.
        num_classes: output classes.
        hidden: LSTM state size per direction.
        layers: stacked LSTM layers.
        bidirectional: also run the sequence backwards.
        readout: ``"final"`` or ``"mean"``.
        dropout: ``nn.LSTM`` dropout between layers.
        seq_len: accepted for a uniform constructor (:func:`build_sequence_baseline`); checked on input if given.

    Example:
        >>> model = BiLSTM(32, 20)
        >>> model(torch.randn(2, 64, 32)).shape, count_parameters(model)
        (torch.Size([2, 20]), 566292)
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden: int = 128,
        layers: int = 2,
        bidirectional: bool = True,
        readout: Literal["final", "mean"] = "final",
        dropout: float = 0.0,
        *,
        seq_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.seq_len = seq_len
        if readout not in ("final", "mean"):
            raise ValueError(f"readout must be 'final' or 'mean', got {readout!r}")
        self.readout = readout
        check_fraction(dropout, "dropout")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.lstm = nn.LSTM(
            input_dim,
            check_positive_int(hidden, "hidden"),
            check_positive_int(layers, "layers"),
            batch_first=True,
            dropout=dropout,
            bidirectional=bidirectional,
            **kw,
        )
        self.directions = 2 if bidirectional else 1
        self.head = nn.Linear(self.directions * hidden, num_classes, **kw)

    def features(self, x: Tensor) -> Tensor:
        """The readout ``(B, directions * hidden)``; with ``"final"``, forward state first, then backward."""
        _check_input(x, self.input_dim, self.seq_len)
        out, (h_n, _) = self.lstm(x)  # out (B, T, dirs*H); h_n (layers*dirs, B, H)
        if self.readout == "mean":
            return out.mean(1)
        return torch.cat(list(h_n[-self.directions :]), dim=-1)  # (B, dirs*H): last layer's final states

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for ``x`` of shape ``(B, T, D)``."""
        return self.head(self.features(x))


# ---------------------------------------------------------------------------------------------------------- registry

# Each entry takes ``(input_dim, num_classes, seq_len=..., **kwargs)``.
SEQUENCE_BASELINES: dict[str, type[nn.Module]] = {
    "mlp": SequenceMLP,
    "transformer": SequenceTransformer,
    "sparse_transformer": SparseTransformer,
    "bilstm": BiLSTM,
}

# The width argument each baseline scales with when matching a budget, and how a width becomes kwargs.
_WIDTH_KWARGS = {
    "mlp": lambda w: {"hidden": (w, w)},
    "transformer": lambda w: {"dim": w},
    "sparse_transformer": lambda w: {"dim": w},
    "bilstm": lambda w: {"hidden": w},
}


def _baseline_class(name: str) -> type[nn.Module]:
    if name not in SEQUENCE_BASELINES:
        raise unknown_name_error("sequence baseline", name, SEQUENCE_BASELINES)
    return SEQUENCE_BASELINES[name]


def budget_matched_kwargs(
    name: str, input_dim: int, num_classes: int, seq_len: int, budget: int = 41_672, **kwargs: Any
) -> dict[str, Any]:
    """The width kwargs whose model has the parameter count closest to ``budget`` (the other kwargs held fixed).

    The width scanned is ``hidden`` (both layers) for ``mlp``, ``dim`` (a multiple of ``heads``) for the
    Transformers, ``hidden`` for ``bilstm``. Candidates are built on the ``meta`` device, so nothing is allocated.

    Example:
        >>> budget_matched_kwargs("transformer", 32, 20, 64)
        {'dim': 40}
    """
    cls = _baseline_class(name)
    check_positive_int(budget, "budget")
    step = int(kwargs.get("heads", 4)) if name in ("transformer", "sparse_transformer") else 1
    best: tuple[int, int] | None = None  # (|count - budget|, width)
    for width in range(step, 4097, step):
        model = cls(input_dim, num_classes, seq_len=seq_len, **{**kwargs, **_WIDTH_KWARGS[name](width)}, device="meta")
        gap = count_parameters(model) - budget
        if best is None or abs(gap) < best[0]:
            best = (abs(gap), width)
        if gap > 0:  # counts grow with the width: past the budget, no wider model can be closer
            break
    assert best is not None
    return _WIDTH_KWARGS[name](best[1])


def build_sequence_baseline(
    name: str, input_dim: int, num_classes: int, seq_len: int, *, budget: int | None = None, **kwargs: Any
) -> nn.Module:
    """Builds the baseline ``name`` (one of :data:`SEQUENCE_BASELINES`) for ``(B, seq_len, input_dim)`` inputs.

    Args:
        name: ``"mlp"``, ``"transformer"``, ``"sparse_transformer"`` or ``"bilstm"``.
        input_dim: features per token.
        num_classes: output classes.
        seq_len: sequence length.
        budget: if given, the width is chosen by :func:`budget_matched_kwargs` (explicit kwargs still win);
            if ``None``, the paper's sizes.
        **kwargs: passed to the class (``device=``, ``dtype=``, widths, ...).

    Raises:
        ValueError: ``name`` is not a registered baseline (the message lists the valid names).

    Example:
        >>> count_parameters(build_sequence_baseline("bilstm", 32, 10, 128))
        563722
        >>> count_parameters(build_sequence_baseline("bilstm", 32, 20, 64, budget=41_672))
        40940
    """
    cls = _baseline_class(name)
    if budget is not None:
        fixed = {k: v for k, v in kwargs.items() if k not in ("device", "dtype")}
        kwargs = {**budget_matched_kwargs(name, input_dim, num_classes, seq_len, budget, **fixed), **kwargs}
    return cls(input_dim, num_classes, seq_len=seq_len, **kwargs)
