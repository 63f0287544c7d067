"""A small Vision Transformer for image classification whose sparse layers and percolation junctions are declared.

The DeiT / ViT shape (Dosovitskiy et al., 2021; Touvron et al., 2021) scaled down for 28x28 grey images: a patch
embedding, a learned class token and position embedding, pre-norm blocks (LayerNorm, multi-head self-attention with
separate ``q, k, v`` and an output ``proj``, a GELU MLP ``fc1 -> fc2``), a final LayerNorm and a linear head on the
class token. The six Linear layers of every block are sparse; the patch embedding, class token, position embedding,
norms and head stay dense (as in the dense -> 2:4 retraining of DeiT). Percolation junctions pair ``q`` with ``k``
per head dimension, chain ``v`` into ``proj`` and ``fc1`` into ``fc2``.

The constructor follows :class:`~sparsebrain.models.MLP` (``in_features, hidden, out_features``), so the
classification task builds either from the same config: inputs arrive flattened, ``(B, D)``, and are reshaped to the
image; ``hidden`` is the one width of the residual stream.

Example:
    >>> model = ViT(784, [128], 10)  # 28x28 grey images, 4x4 patches -> 49 tokens + the class token
    >>> model(torch.rand(2, 784)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_fraction, check_positive_int
from ..topology.percolation import Junction, attention_junctions

__all__ = ["ViT", "ViTAttention", "ViTBlock", "ViTMLP"]

_SPARSE_LAYERS = ("attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc1", "mlp.fc2")
# The GPU 2:4 kernels (cuSPARSELt / CUTLASS) take matrices whose sides are multiples of 64; checking it here gives a
# clear error at construction instead of a failure at export, after training.
_KERNEL_MULTIPLE = 64


class ViTAttention(nn.Module):
    """Multi-head self-attention (not causal) with separate ``q, k, v`` projections and an output ``proj``.

    Separate projections rather than one fused ``qkv``: each is its own sparse layer, so the percolation junctions
    can name them (``q`` with ``k``, ``v`` into ``proj``). Row ``h * hs + d`` of ``q``, ``k`` and ``v`` (and column
    ``h * hs + d`` of ``proj``) is dimension ``d`` of head ``h``.

    Example:
        >>> ViTAttention(64, 4)(torch.randn(2, 5, 64)).shape
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
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim, **kw)
        self.k = nn.Linear(dim, dim, **kw)
        self.v = nn.Linear(dim, dim, **kw)
        self.proj = nn.Linear(dim, dim, **kw)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        nh, hs = self.heads, self.head_dim
        q = self.q(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, nh, T, hs): every token sees every token
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.proj(y))  # (B, T, C)


class ViTMLP(nn.Module):
    """The block's feed-forward part: ``fc2(gelu(fc1(x)))``.

    Example:
        >>> ViTMLP(64, 256)(torch.randn(2, 5, 64)).shape
        torch.Size([2, 5, 64])
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
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(dim, hidden, **kw)
        self.fc2 = nn.Linear(hidden, dim, **kw)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(F.gelu(self.fc1(x))))  # (B, T, C)


class ViTBlock(nn.Module):
    """A pre-norm encoder block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Example:
        >>> ViTBlock(64, 4, 256)(torch.randn(2, 5, 64)).shape
        torch.Size([2, 5, 64])
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_hidden: int,
        dropout: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(dim, **kw)
        self.attn = ViTAttention(dim, heads, dropout, **kw)
        self.norm2 = nn.LayerNorm(dim, **kw)
        self.mlp = ViTMLP(dim, mlp_hidden, dropout, **kw)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))  # (B, T, C)
        return x + self.mlp(self.norm2(x))  # (B, T, C)


def _image_shape(
    in_features: int, input_shape: Sequence[int] | None, image_size: int | Sequence[int] | None
) -> tuple[int, int, int]:
    """``(C, H, W)`` of one image: ``input_shape``, ``image_size`` or else a square grey image of ``D`` pixels."""
    if input_shape is not None and image_size is not None:
        raise ValueError(
            f"give input_shape or image_size, not both; got input_shape={input_shape!r}, image_size={image_size!r}"
        )
    if input_shape is not None:
        name, shape = "input_shape", tuple(input_shape)
        if len(shape) == 2:
            shape = (1, *shape)  # (H, W): grey
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (H, W) or (C, H, W), got {input_shape!r}")
    elif image_size is not None:
        name = "image_size"
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(hw) != 2:
            raise ValueError(f"image_size must be a side S (square) or (H, W), got {image_size!r}")
        shape = (1, *hw)
    else:
        side = math.isqrt(in_features)
        if side * side != in_features:
            raise ValueError(
                f"in_features={in_features} is not a square number of pixels, so the image shape cannot be guessed; "
                f"give input_shape=(H, W) or (C, H, W) (model.options in a config)"
            )
        return 1, side, side
    for n in shape:
        check_positive_int(n, name)
    C, H, W = shape
    if C * H * W != in_features:
        raise ValueError(f"{name}={tuple(shape)} holds {C * H * W} values but in_features={in_features}")
    return C, H, W


class ViT(nn.Module):
    """A pre-norm Vision Transformer on flattened images; the six Linear layers of every block are declared sparse.

    Args:
        in_features: ``D``, values per flattened image (784 for 28x28 grey).
        hidden: The width ``C`` of the residual stream, as one number or a one-element list (``model.hidden: [128]``
            in a config, where the MLP takes its list of hidden widths). A multiple of 64.
        out_features: Number of classes.
        depth: Number of blocks.
        heads: Attention heads; ``hidden`` must be divisible by it.
        mlp_ratio: Width of ``fc1`` over ``hidden``; ``hidden * mlp_ratio`` must be an integer multiple of 64.
        patch: Side of the square patches; must divide the image's height and width.
        input_shape: ``(H, W)`` or ``(C, H, W)`` of one image, e.g. ``ArrayDataset.input_shape``.
        image_size: Alternatively the side ``S`` of a square grey image, or ``(H, W)``. With neither, the image is
            square and grey, of side ``sqrt(in_features)``.
        dropout: On the embeddings, attention probabilities and residual branches (DeiT uses 0).
        device: Where to create the parameters (``"meta"`` builds the structure without memory).
        dtype: Parameter dtype.

    Raises:
        ValueError: On a bad size, naming the parameter: ``hidden`` or ``hidden * mlp_ratio`` not a multiple of 64,
            ``hidden`` not divisible by ``heads``, a ``patch`` that does not divide the image, an image shape that
            does not match ``in_features``.

    Example:
        >>> model = ViT(784, 128, 10, depth=2)
        >>> model(torch.rand(3, 784)).shape, model.num_patches
        (torch.Size([3, 10]), 49)
        >>> sorted({n.rpartition(".")[2] for n, m in model.named_modules() if model.sparse_filter(n, m)})
        ['fc1', 'fc2', 'k', 'proj', 'q', 'v']
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: int | Sequence[int] = 128,
        out_features: int = 10,
        *,
        depth: int = 6,
        heads: int = 4,
        mlp_ratio: float = 4,
        patch: int = 4,
        input_shape: Sequence[int] | None = None,
        image_size: int | Sequence[int] | None = None,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int(in_features, "in_features")
        check_positive_int(out_features, "out_features")
        dim = self._width(hidden)
        for name, value in (("depth", depth), ("heads", heads), ("patch", patch)):
            check_positive_int(value, name)
        if dim % heads:
            raise ValueError(f"hidden (the width) must be divisible by heads, got hidden={dim} and heads={heads}")
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, int | float) or not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be a number > 0, got {mlp_ratio!r}")
        mlp_hidden = dim * mlp_ratio
        if mlp_hidden != int(mlp_hidden) or int(mlp_hidden) % _KERNEL_MULTIPLE:
            raise ValueError(
                f"mlp_ratio: hidden * mlp_ratio (the width of fc1) must be an integer multiple of {_KERNEL_MULTIPLE} "
                f"(the 2:4 GPU kernels need it), got {dim} * {mlp_ratio} = {mlp_hidden}"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        check_fraction(dropout, "dropout", closed_high=False)
        C, H, W = _image_shape(in_features, input_shape, image_size)
        if H % patch or W % patch:
            raise ValueError(f"patch={patch} must divide the image's height and width, got an image of {H}x{W}")

        self.input_shape = (C, H, W)
        self.patch = patch
        self.num_patches = (H // patch) * (W // patch)
        self.depth = depth
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        # A strided convolution is a Linear on each flattened patch; as a Conv2d it is also no candidate for tools
        # that sparsify every nn.Linear (its C * patch^2 inputs would not fit the 2:4 kernels anyway).
        self.patch_embed = nn.Conv2d(C, dim, kernel_size=patch, stride=patch, **kw)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim, **kw))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, dim, **kw))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, int(mlp_hidden), dropout, **kw) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, **kw)
        self.head = nn.Linear(dim, out_features, **kw)
        self._sparse_names = frozenset(f"blocks.{i}.{p}" for i in range(depth) for p in _SPARSE_LAYERS)
        self.reset_parameters()

    @staticmethod
    def _width(hidden: int | Sequence[int]) -> int:
        """The one width ``C`` from ``hidden`` (an int or a one-element list)."""
        if not isinstance(hidden, int | bool):
            widths = list(hidden)
            if len(widths) != 1:
                raise ValueError(
                    f"hidden must be the ViT's one width (e.g. [128]), got {hidden!r}; depth, heads and mlp_ratio "
                    f"are separate arguments (model.options in a config)"
                )
            hidden = widths[0]
        check_positive_int(hidden, "hidden")
        if hidden % _KERNEL_MULTIPLE:
            raise ValueError(
                f"hidden (the width) must be a multiple of {_KERNEL_MULTIPLE} (the 2:4 GPU kernels need it), "
                f"got {hidden}"
            )
        return hidden

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The ViT / DeiT initialisation: truncated N(0, 0.02) for Linear weights and the position embedding, zero
        biases, LayerNorms at (1, 0), a near-zero class token; the patch embedding keeps PyTorch's default."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits.

        Args:
            x: Images ``(B, D)`` flattened (as in :class:`~sparsebrain.data.ArrayDataset`), or ``(B, C, H, W)``.

        Returns:
            Logits ``(B, out_features)``.

        Raises:
            ValueError: If one example does not hold ``C * H * W`` values.
        """
        B = x.shape[0]
        C, H, W = self.input_shape
        if x.shape[1:].numel() != C * H * W:
            raise ValueError(
                f"expected images of {C}x{H}x{W} = {C * H * W} values, got input of shape {tuple(x.shape)}"
            )
        x = self.patch_embed(x.reshape(B, C, H, W))  # (B, dim, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, dim): patches in row-major order
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + N, dim)
        x = self.drop(x + self.pos_embed)  # (B, 1 + N, dim)
        for block in self.blocks:
            x = block(x)  # (B, 1 + N, dim)
        return self.head(self.norm(x[:, 0]))  # (B, out_features): classified from the class token alone

    def sparse_filter(self, fqn: str, module: nn.Module) -> bool:
        """The ``q, k, v, proj, fc1, fc2`` layers of every block are sparse; all else stays dense."""
        return fqn in self._sparse_names

    def sparse_junctions(self) -> list[Junction]:
        """The hidden neurons shared by sparse layers, per block, for active-neuron percolation.

        - ``(q, k)``: row ``d`` of ``q`` and row ``d`` of ``k`` multiply each other in the attention score, so a head
          dimension must be alive in both.
        - ``(v) -> (proj)``: attention mixes tokens, not dimensions, so value dimension ``d`` reaches only column
          ``d`` of ``proj``.
        - ``(fc1) -> (fc2)``: the MLP's hidden neurons.

        The residual stream (inputs of ``q, k, v, fc1``, outputs of ``proj, fc2``) is not a junction: the skip
        connections keep every residual dimension alive. (With the Linear biases a dead neuron still outputs a
        constant; it carries no information, and what its consumers make of it a bias can learn.)

        Example:
            >>> ViT(784, 64, 10, depth=1, device="meta").sparse_junctions()[1]
            Junction(producers=('blocks.0.attn.v',), consumers=('blocks.0.attn.proj',))
        """
        junctions = []
        for i in range(self.depth):
            attn, mlp = f"blocks.{i}.attn", f"blocks.{i}.mlp"
            junctions += [
                *attention_junctions(attn, out="proj"),
                Junction(producers=(f"{mlp}.fc1",), consumers=(f"{mlp}.fc2",)),
            ]
        return junctions
