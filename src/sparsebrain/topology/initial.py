"""Initial sparse topologies of a bipartite layer: boolean masks of shape ``(out, in)``, as ``nn.Linear.weight``.

Every initialiser takes ``(shape, density)`` plus its own keyword arguments and returns a mask with exactly
``round(density * out * in)`` links, so that layers built from different topologies are compared at equal cost.

Randomness is drawn on the generator's device (or on ``device`` when no generator is given), and the mask is then moved
to ``device``: the same seeded CPU generator gives the same mask whatever device the mask is asked for.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> mask = initial_mask("brf", (1568, 784), 0.01, r=0.3, generator=g)
    >>> int(mask.sum()) == round(0.01 * 1568 * 784)
    True
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

import torch

from .._validation import check_density, check_fraction
from ..registry import Registry

__all__ = ["INITS", "brf", "bsf", "bsw", "csti", "er", "er_links", "initial_mask"]

InitFn = Callable[..., torch.Tensor]
Device = torch.device | str | None

INITS: Registry[InitFn] = Registry("init")

_DEGREE_MODES = ("uniform", "fixed")
_SMALL = 1 << 16  # below this many candidates, sample subsets with randperm


# ---------------------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------------------


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    """Returns ``shape`` as ``(out, in)`` if it is two positive ints, else raises ``ValueError`` naming ``shape``."""
    msg = f"shape must be two positive ints (out, in), got {shape!r}"
    try:
        dims = tuple(shape)
        if len(dims) != 2 or any(isinstance(d, bool) for d in dims):
            raise ValueError(msg)
        out_f, in_f = (operator.index(d) for d in dims)
    except TypeError:
        raise ValueError(msg) from None
    if out_f < 1 or in_f < 1:
        raise ValueError(msg)
    return out_f, in_f


def _setup(
    shape: Sequence[int], density: float, generator: torch.Generator | None, device: Device
) -> tuple[int, int, int, torch.device, torch.device]:
    """Validates the common arguments; returns ``(out, in, n_links, work_device, result_device)``."""
    out_f, in_f = _check_shape(shape)
    density = check_density(density)
    n_links = round(density * out_f * in_f)
    result = torch.device(device) if device is not None else None
    # Draw on the generator's device: torch refuses a generator of another device, and this keeps seeds portable.
    work = generator.device if generator is not None else (result or torch.device("cpu"))
    return out_f, in_f, n_links, work, result or work


def _choose_mask(n: int, k: int, *, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """A uniform random k-subset of ``range(n)``, as a bool tensor of length ``n`` with ``k`` True entries.

    ``randperm(n)[:k]`` costs 2 s on a 4096x11008 layer; drawing with replacement and marking the hits costs O(n) cheap
    writes. The set of distinct draws is exchangeable (its law is invariant under permutations of ``range(n)``, the
    stopping rule looks only at its size), so removing a uniform subset of the overshoot leaves a uniform k-subset.
    """
    hit = torch.zeros(n, dtype=torch.bool, device=device)
    if n <= _SMALL:  # a permutation is cheap here, and it ends the recursion below
        hit[torch.randperm(n, generator=generator, device=device)[:k]] = True
        return hit
    if 2 * k > n:  # the complement is the smaller draw
        return ~_choose_mask(n, n - k, generator=generator, device=device)
    count = 0
    while count < k:
        # expected draws for (k - count) new distinct values among the n - count free ones, plus a small margin
        need = -n * math.log1p(-(k - count) / (n - count))
        draws = torch.randint(n, (int(1.05 * need) + 16,), generator=generator, device=device)
        hit[draws] = True
        count = int(hit.sum())
    if count > k:
        picked = hit.nonzero().squeeze(1)
        hit[picked[_choose(count, count - k, generator=generator, device=device)]] = False
    return hit


def _choose(n: int, k: int, *, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``k`` distinct indices drawn uniformly from ``range(n)``, sorted (long): :func:`_choose_mask`'s subset.

    The draws and their order are :func:`_choose_mask`'s, so the same generator state gives the same subset; the
    distinct draws are kept sorted (``unique``) instead of marked, so the work and memory grow with ``k``, not ``n``
    (above density 1/2, where the complement is drawn, a length-``n`` mask is built after all).
    """
    if n <= _SMALL:
        return torch.randperm(n, generator=generator, device=device)[:k].sort().values
    if 2 * k > n:
        keep = torch.ones(n, dtype=torch.bool, device=device)
        keep[_choose(n, n - k, generator=generator, device=device)] = False
        return keep.nonzero().squeeze(1)
    chosen = torch.zeros(0, dtype=torch.long, device=device)
    while chosen.numel() < k:
        count = chosen.numel()
        need = -n * math.log1p(-(k - count) / (n - count))
        draws = torch.randint(n, (int(1.05 * need) + 16,), generator=generator, device=device)
        chosen = torch.unique(torch.cat([chosen, draws]))  # sorted
    count = chosen.numel()
    if count > k:
        keep = torch.ones(count, dtype=torch.bool, device=device)
        keep[_choose(count, count - k, generator=generator, device=device)] = False
        chosen = chosen[keep]
    return chosen


def _from_flat(index: torch.Tensor, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Bool mask of ``shape`` with True at the flat positions ``index``."""
    mask = torch.zeros(shape[0] * shape[1], dtype=torch.bool, device=device)
    mask[index] = True
    return mask.view(shape)


def _gumbel_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise: top-k of ``log p + G`` is sampling k items without replacement with probability ~ p.

    ``-log(-log(U))`` rather than ``-log(Exponential)``: a draw of exactly 0 then gives -inf (an item never preferred)
    instead of +inf (an item always taken); at 2^-24 per float32 draw that happens on big layers.
    """
    return torch.empty_like(x).uniform_(generator=generator).log_().neg_().log_().neg_()


# ---------------------------------------------------------------------------------------------------------------------
# ER
# ---------------------------------------------------------------------------------------------------------------------


def er(
    shape: Sequence[int], density: float, *, generator: torch.Generator | None = None, device: Device = None
) -> torch.Tensor:
    """Erdős-Rényi (SET) topology: ``round(density * out * in)`` links placed uniformly at random.

    Args:
        shape: ``(out, in)``, the shape of the weight.
        density: fraction of links kept, in (0, 1].
        generator: source of randomness (its device is where the sampling runs).
        device: device of the returned mask.

    Example:
        >>> er((4, 5), 0.5, generator=torch.Generator().manual_seed(0)).sum().item()
        10
    """
    out_f, in_f, k, work, dest = _setup(shape, density, generator, device)
    return _choose_mask(out_f * in_f, k, generator=generator, device=work).view(out_f, in_f).to(dest)


def er_links(
    shape: Sequence[int], density: float, *, generator: torch.Generator | None = None, device: Device = None
) -> torch.Tensor:
    """The links of :func:`er` as sorted flat positions ``row * in + col`` (int64), without an ``(out, in)`` mask.

    The same generator state gives the same links as ``er`` (``er(...)[flat] `` is True exactly at them), so a
    compressed layer starts from the masked layer's topology.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> er_links((1000, 1000), 0.001, generator=g).numel()
        1000
    """
    out_f, in_f, k, work, dest = _setup(shape, density, generator, device)
    return _choose(out_f * in_f, k, generator=generator, device=work).to(dest)


# ---------------------------------------------------------------------------------------------------------------------
# BRF and the ring lattice
# ---------------------------------------------------------------------------------------------------------------------


def _centres(n_small: int, n_large: int, device: torch.device) -> torch.Tensor:
    """Centres of the smaller side on the ring of the larger side, evenly spread: ``round(i * n_large / n_small)``.

    The float stride matters: the integer stride ``n_large // n_small`` packs every centre into the first
    ``n_small * stride`` nodes and leaves the rest of the ring (up to half of it) uncovered at small r.
    """
    i = torch.arange(n_small, device=device)
    return ((2 * i * n_large + n_small) // (2 * n_small)) % n_large  # exact integer round-half-up


def _degrees(
    n_small: int, n_large: int, k: int, degree: str, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Splits ``k`` links over the smaller side's nodes (each capped at ``n_large``)."""
    if degree == "fixed":
        # Bresenham split: every node gets floor or ceil of k / n_small, the ceil ones evenly spaced (deterministic)
        cum = (torch.arange(n_small + 1, device=device) * k) // n_small
        return cum[1:] - cum[:-1]
    deg = torch.zeros(n_small, dtype=torch.long, device=device)
    if k <= n_small:  # not enough links for one each
        deg[_choose(n_small, k, generator=generator, device=device)] = 1
        return deg
    deg += 1
    spare = n_large - 1  # free slots per node once it has its first link
    if spare > 0 and k > n_small:
        # a uniform subset of the free slots: the extra links spread at random, no node beyond n_large
        slots = _choose(n_small * spare, k - n_small, generator=generator, device=device)
        deg += torch.bincount(slots // spare, minlength=n_small)
    return deg


def _receptive_field(
    n_small: int,
    n_large: int,
    k: int,
    r: float,
    degree: str,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """BRF mask of shape ``(n_small, n_large)``: row i links near its centre on the ring of the larger side."""
    deg = _degrees(n_small, n_large, k, degree, generator, device)  # (n_small,)
    centres = _centres(n_small, n_large, device)  # (n_small,)
    kmax = int(deg.max()) if k > 0 else 0
    mask = torch.zeros(n_small, n_large, dtype=torch.bool, device=device)
    if kmax == 0:
        return mask
    t = torch.arange(kmax, device=device)
    if r == 0.0:
        # nearest nodes in the order 0, +1, -1, +2, -2, ... (ties at equal ring distance go clockwise first); the first
        # n_large offsets of this sequence are distinct mod n_large, so no column repeats in a row
        offsets = ((t + 1) // 2) * torch.where(t % 2 == 1, 1, -1)  # (kmax,)
        cols = (centres[:, None] + offsets[None, :]) % n_large  # (n_small, kmax)
    else:
        j = torch.arange(n_large, device=device, dtype=torch.float32)
        diff = (j[None, :] - centres[:, None].float()).abs()  # (n_small, n_large)
        dist = torch.minimum(diff, n_large - diff)  # ring distance
        logp = dist.log1p_().mul_(-(1.0 - r) / r)  # log of (1 + d)^(-(1 - r) / r)
        cols = (logp + _gumbel_like(logp, generator)).topk(kmax, dim=1).indices  # (n_small, kmax), best first
    keep = t[None, :] < deg[:, None]  # (n_small, kmax): row i keeps its first deg[i] picks
    rows = torch.arange(n_small, device=device)[:, None].expand_as(cols)
    mask[rows[keep], cols[keep]] = True
    return mask


def _receptive_field_links(
    n_small: int,
    n_large: int,
    k: int,
    r: float,
    degree: str,
    generator: torch.Generator | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The links of :func:`_receptive_field` as ``(rows, cols)``, drawn without an ``(n_small, n_large)`` tensor.

    Every row draws its links one at a time from the offsets it has not taken, with probability proportional to
    ``(1 + d)^(-(1 - r) / r)`` (``d`` the ring distance): the sequential law that :func:`_receptive_field`'s Gumbel
    top-k realises. A draw inverts the cumulative weights of the offsets with the row's taken ones left out (a few
    searches per draw), so the cost is ``O(n_small * kmax^2)``, not ``O(n_small * n_large)``.
    """
    deg = _degrees(n_small, n_large, k, degree, generator, device)  # (n_small,)
    centres = _centres(n_small, n_large, device)
    kmax = int(deg.max()) if k > 0 else 0
    t = torch.arange(n_large, device=device)
    offsets = ((t + 1) // 2) * torch.where(t % 2 == 1, 1, -1)  # 0, +1, -1, +2, ...: distinct mod n_large
    p = (1.0 + offsets.abs().double()) ** (-(1.0 - r) / r)
    cdf = p.cumsum(0)
    taken = torch.full((n_small, max(kmax, 1)), n_large, dtype=torch.long, device=device)  # n_large: no offset
    mass = torch.zeros(n_small, dtype=torch.float64, device=device)  # weight of each row's taken offsets
    p_ext = torch.cat([p, p.new_zeros(1)])  # the weight of "no offset" is 0
    total = cdf[-1]
    for step in range(kmax):
        active = (deg > step).nonzero().squeeze(1)
        if not active.numel():
            break
        u = torch.rand(active.numel(), generator=generator, device=device, dtype=torch.float64)
        u = u * (total - mass[active])  # a point of the untaken weight
        own = taken[active, :step]  # (active, step)
        own_p = p_ext[own]
        j = torch.searchsorted(cdf, u, right=True).clamp_(max=n_large - 1)
        for _ in range(step + 1):  # j = the first offset whose untaken cumulative weight exceeds u
            below = (own_p * (own <= j[:, None])).sum(1)
            j_next = torch.searchsorted(cdf, u + below, right=True).clamp_(max=n_large - 1)
            if torch.equal(j_next, j):
                break
            j = j_next
        taken[active, step] = j
        mass[active] += p[j]
    keep = torch.arange(max(kmax, 1), device=device)[None, :] < deg[:, None]
    rows = torch.arange(n_small, device=device)[:, None].expand_as(taken)[keep]
    cols = (centres[:, None] + offsets[taken.clamp(max=n_large - 1)]).remainder(n_large)[keep]
    return rows, cols


def brf_links(
    shape: Sequence[int],
    density: float,
    *,
    r: float = 0.3,
    degree: str = "uniform",
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """The links of a :func:`brf` topology as sorted flat positions ``row * in + col``, without an ``(out, in)``
    tensor: the same law as :func:`brf` (the same degrees, centres and distance weights), other random draws.

    ``r = 0`` is deterministic and gives exactly :func:`brf`'s links; ``r = 1`` is :func:`er_links`. Layers where more
    than a quarter of the positions are links are drawn by :func:`brf` itself (one link at a time is slow there).

    Example:
        >>> flat = brf_links((100, 3000), 0.01, generator=torch.Generator().manual_seed(0))
        >>> flat.numel(), torch.bincount(flat // 3000, minlength=100).min().item() >= 1
        (3000, True)
    """
    r = check_fraction(r, "r")
    degree = _check_degree(degree)
    out_f, in_f, k, work, dest = _setup(shape, density, generator, device)
    if r == 1.0:
        return er_links((out_f, in_f), density, generator=generator, device=device)
    if r == 0.0 or 4 * k > out_f * in_f:
        mask = brf((out_f, in_f), density, r=r, degree=degree, generator=generator, device=work)
        return mask.reshape(-1).nonzero().squeeze(1).to(dest)
    small, large = (out_f, in_f) if out_f <= in_f else (in_f, out_f)
    rows, cols = _receptive_field_links(small, large, k, r, degree, generator, work)
    flat = rows * in_f + cols if out_f <= in_f else cols * in_f + rows
    return flat.sort().values.to(dest)


def _check_degree(degree: str) -> str:
    if degree not in _DEGREE_MODES:
        raise ValueError(f"degree must be one of {', '.join(map(repr, _DEGREE_MODES))}, got {degree!r}")
    return degree


def brf(
    shape: Sequence[int],
    density: float,
    *,
    r: float = 0.3,
    degree: str = "uniform",
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """Bipartite receptive field topology (CHTs, NeurIPS 2025).

    Each node of the smaller side (outputs on a square layer) gets a centre on a ring over the larger side; the centres
    are spread evenly (float stride, rounded), so every part of the larger side is covered. With ring distance
    ``d = min(|j - c|, n - |j - c|)``, a node links to:

    - ``r = 0``: its nearest nodes (a ring lattice; ties at equal distance taken clockwise first, so it is deterministic
      for ``degree="fixed"``);
    - ``0 < r < 1``: nodes sampled without replacement with probability proportional to ``(1 + d)^(-(1 - r) / r)``
      (Gumbel top-k, all rows at once);
    - ``r = 1``: anywhere: the mask is exactly :func:`er` (which has no prescribed degrees, so ``degree`` is unused).

    Args:
        shape: ``(out, in)``, the shape of the weight.
        density: fraction of links kept, in (0, 1].
        r: randomness in [0, 1]: 0 is a pure receptive field, 1 is ER.
        degree: degrees of the smaller side: ``"uniform"`` (one link each, the rest spread at random) or ``"fixed"``
            (floor or ceil of the mean degree each).
        generator: source of randomness (its device is where the sampling runs).
        device: device of the returned mask.

    Example:
        >>> m = brf((12, 30), 0.2, r=0.0, degree="fixed")
        >>> m.sum(1).tolist()[:4], int(m.sum())
        ([6, 6, 6, 6], 72)
    """
    r = check_fraction(r, "r")
    degree = _check_degree(degree)
    out_f, in_f, k, work, dest = _setup(shape, density, generator, device)
    if r == 1.0:
        return er((out_f, in_f), density, generator=generator, device=device)
    if out_f <= in_f:
        return _receptive_field(out_f, in_f, k, r, degree, generator, work).to(dest)
    return _receptive_field(in_f, out_f, k, r, degree, generator, work).T.contiguous().to(dest)


# ---------------------------------------------------------------------------------------------------------------------
# BSW
# ---------------------------------------------------------------------------------------------------------------------


def bsw(
    shape: Sequence[int],
    density: float,
    *,
    beta: float = 0.25,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """Bipartite Watts-Strogatz topology: a ring lattice with a fraction ``beta`` of its links rewired at random.

    The lattice is ``brf(shape, density, r=0, degree="fixed")``: each node of the smaller side links to its nearest
    nodes on a ring over the larger side, centres evenly spaced. Then ``round(beta * n_links)`` links chosen uniformly
    are removed and as many are added uniformly among all non-links (both endpoints re-drawn), so ``beta = 0`` is the
    lattice and ``beta = 1`` is exactly :func:`er`. A re-added link can land back on a removed position, so the fraction
    of lattice links that moved is ``beta`` times ``1 - O(density)``.

    Args:
        shape: ``(out, in)``, the shape of the weight.
        density: fraction of links kept, in (0, 1].
        beta: rewiring probability in [0, 1].
        generator: source of randomness (its device is where the sampling runs).
        device: device of the returned mask.

    Example:
        >>> bool((bsw((12, 30), 0.2, beta=0.0) == brf((12, 30), 0.2, r=0.0, degree="fixed")).all())
        True
    """
    beta = check_fraction(beta, "beta")
    out_f, in_f, k, work, dest = _setup(shape, density, generator, device)
    lattice = brf((out_f, in_f), density, r=0.0, degree="fixed", device=work)
    n_rewire = round(beta * k)
    if n_rewire == 0:
        return lattice.to(dest)
    flat = lattice.flatten()
    links = flat.nonzero().squeeze(1)
    flat[links[_choose(k, n_rewire, generator=generator, device=work)]] = False
    free = (~flat).nonzero().squeeze(1)  # every non-link, the removed positions included
    flat[free[_choose(free.numel(), n_rewire, generator=generator, device=work)]] = True
    return flat.view(out_f, in_f).to(dest)


# ---------------------------------------------------------------------------------------------------------------------
# BSF
# ---------------------------------------------------------------------------------------------------------------------


def bsf(
    shape: Sequence[int],
    density: float,
    *,
    gamma: float = 2.76,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """Bipartite scale-free topology: degrees follow a power law ``P(k) ~ k^(-gamma)`` on both sides.

    A vectorised stand-in for the authors' generator (preferential attachment on the ``in + out`` nodes, then links
    inside one side rewired across sides), with the same target and an exact link count: a bipartite Chung-Lu model.
    The ``in + out`` nodes get power-law weights ``w = rank^(-1 / (gamma - 1))`` with the ranks in random order over
    both sides, and links are sampled without replacement with probability proportional to ``w_out * w_in`` (one
    Gumbel top-k over the whole matrix), so expected degrees are proportional to the weights. Unlike preferential
    attachment there is no minimum degree: at very low density a few of the lightest nodes can start with no link.

    Args:
        shape: ``(out, in)``, the shape of the weight.
        density: fraction of links kept, in (0, 1].
        gamma: power-law exponent, > 2 (finite mean degree); smaller is more hub-dominated.
        generator: source of randomness (its device is where the sampling runs).
        device: device of the returned mask.

    Example:
        >>> m = bsf((1568, 784), 0.01, generator=torch.Generator().manual_seed(0))
        >>> bool(m.sum(0).max() > 5 * m.sum(0).float().mean())
        True
    """
    g = float(gamma)
    if not (math.isfinite(g) and g > 2.0):
        raise ValueError(f"gamma must be a finite number > 2, got {gamma!r}")
    out_f, in_f, k, work, dest = _setup(shape, density, generator, device)
    ranks = torch.randperm(out_f + in_f, generator=generator, device=work).to(torch.float32) + 1.0
    logw = ranks.log_().mul_(-1.0 / (g - 1.0))  # log of the power-law weight of each node
    logp = logw[:out_f, None] + logw[None, out_f:]  # (out, in): log(w_out * w_in)
    index = (logp + _gumbel_like(logp, generator)).flatten().topk(k).indices
    return _from_flat(index, (out_f, in_f), work).to(dest)


# ---------------------------------------------------------------------------------------------------------------------
# CSTI
# ---------------------------------------------------------------------------------------------------------------------


def csti(
    shape: Sequence[int],
    density: float,
    *,
    data: torch.Tensor,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """Correlated sparse topological initialisation (CHT, ICLR 2024), for a layer fed by the data directly.

    CSTI treats the hidden nodes as copies of the input features and keeps the strongest input-input correlations:

    1. ``C = |corr(data)|``, the ``(in, in)`` absolute Pearson correlation of the features over the samples; a constant
       feature (zero variance, e.g. an MNIST border pixel) has correlation 0 with everything, itself included, instead
       of NaN.
    2. Output node ``u`` is a copy of feature ``a(u) = floor(u * in / out)`` (features evenly spread over the outputs;
       ``out = 2 * in`` gives each feature two copies, the paper's "2x" hidden layer), so its scores are ``C[a(u)]``.
    3. The ``round(density * out * in)`` highest scores of the ``(out, in)`` score matrix become links; ties (copies of
       one feature, zero scores) are broken at random.

    So each copy of a feature links to the feature itself and to the features most correlated with it, and constant
    features get no link while links remain elsewhere.

    Args:
        shape: ``(out, in)``, the shape of the weight.
        density: fraction of links kept, in (0, 1].
        data: ``(N, in)`` input samples, N >= 2 (trailing dimensions are flattened, so ``(N, 1, 28, 28)`` works for a
            784-input layer). A few thousand samples are plenty.
        generator: source of randomness for the tie-breaks (its device is where the work runs).
        device: device of the returned mask.

    Example:
        >>> x = torch.randn(100, 4); x[:, 1] = x[:, 0] + 0.01 * torch.randn(100)
        >>> csti((4, 4), 0.375, data=x)[0, :2].tolist()
        [True, True]
    """
    out_f, in_f, k, work, dest = _setup(shape, density, generator, device)
    if not isinstance(data, torch.Tensor) or data.dim() < 2:
        raise ValueError(f"data must be a tensor of shape (N, in) with N >= 2, got {type(data).__name__}")
    X = data.detach().reshape(data.shape[0], -1).to(device=work, dtype=torch.float64)  # (N, in)
    if X.shape[0] < 2 or X.shape[1] != in_f:
        raise ValueError(f"data must have shape (N >= 2, in={in_f}), got {tuple(data.shape)}")
    constant = (X == X[:1]).all(dim=0)  # (in,): exact test; mean-centring leaves rounding noise, not zeros
    Xc = X - X.mean(dim=0)
    Z = Xc / Xc.norm(dim=0).clamp_min(torch.finfo(torch.float64).tiny)  # unit columns
    Z[:, constant] = 0.0
    C = (Z.T @ Z).abs_().clamp_(max=1.0)  # (in, in) absolute Pearson correlation
    anchors = (torch.arange(out_f, device=work) * in_f) // out_f  # (out,) feature copied by each output
    scores = C[anchors].flatten()  # (out * in,)
    # top-k with random tie-breaks: a stable sort of randomly permuted scores keeps equal scores in random order
    perm = torch.randperm(scores.numel(), generator=generator, device=work)
    order = torch.sort(scores[perm], descending=True, stable=True).indices[:k]
    return _from_flat(perm[order], (out_f, in_f), work).to(dest)


# ---------------------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------------------

INITS.register("er", er)
INITS.register("bsw", bsw)
INITS.register("bsf", bsf)
INITS.register("brf", brf)
# The links-only forms of inits, for layers that hold only their links (drawn without an (out, in) mask)
er.links = er_links  # type: ignore[attr-defined]
brf.links = brf_links  # type: ignore[attr-defined]
INITS.register("csti", csti)


def initial_mask(
    name: str | InitFn,
    shape: Sequence[int],
    density: float,
    *,
    generator: torch.Generator | None = None,
    device: Device = None,
    **kwargs: object,
) -> torch.Tensor:
    """Builds the initial mask of a ``(out, in)`` layer with the topology registered as ``name`` (or a callable).

    Example:
        >>> initial_mask("bsw", (8, 16), 0.25, beta=0.5, generator=torch.Generator().manual_seed(0)).sum().item()
        32
    """
    return INITS.get(name)(shape, density, generator=generator, device=device, **kwargs)
