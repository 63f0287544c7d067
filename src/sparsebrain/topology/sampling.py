"""Selection: turning scores into exact numbers of links, and weighted sampling without replacement.

Every selection of links in sparsebrain goes through here: which active links a removal keeps
(:func:`keep_top`), which candidates regrowth picks (:func:`select_regrowth`, under the sampling rules of
:func:`regrowth_keys`), and the standalone samplers built on them.

Sequentially drawing ``k`` of ``n`` elements without replacement with probability proportional to ``w_i^T`` has the
same law as keeping the ``k`` largest of ``w_i (-ln U_i)^(-1/T)``, ``U_i ~ U(0, 1)`` i.i.d. (Frechet keys; their logs
``T ln w_i + Gumbel`` give the Gumbel-top-k trick; CHTs24 paper, Appendix A). Unlike ``torch.multinomial`` this works
on any number of elements (no 2^24 limit) and costs one random draw and one ``topk``.

Random numbers are *positional*: the uniform of a position is a hash of the position's flat index and a seed drawn
from the generator (:func:`positional_uniform`), so a position gets the same number whether a selection sees the
whole layer at once, a tile of it, or only its links (the compressed storage's updates), on any device.

Selections always return exactly ``k`` entries: when fewer than ``k`` candidates have a positive score, all of them
are kept and the rest are drawn uniformly among the zero-score candidates (the reference code adds 1e-5 to every
candidate for the same purpose).
"""

from __future__ import annotations

import math
import operator

import torch
from torch import Tensor

__all__ = [
    "candidate_keys",
    "draw_seeds",
    "frechet_scores",
    "frechet_scores_at",
    "keep_top",
    "keep_top_active",
    "positional_uniform",
    "regrowth_keys",
    "sample_positions",
    "select_at",
    "select_regrowth",
    "top_indices",
    "topk_mask",
    "true_indices",
    "uniform_scaled_topk",
    "weighted_sample_without_replacement",
]


def _check_nonnegative(t: Tensor, name: str) -> Tensor:
    """Returns ``t`` detached as a float32/float64 tensor, raising if it is not a tensor of values >= 0."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    t = t.detach()
    if t.dtype != torch.float64:
        t = t.float()
    if t.numel() and not bool((t >= 0).all()):  # also catches NaN
        raise ValueError(f"{name} must be >= 0 everywhere (no negative or NaN entries)")
    return t


def _check_temperature(temperature: float) -> float:
    T = float(temperature)
    if not (T > 0) or math.isinf(T):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return T


def _check_k(k: int, numel: int) -> int:
    try:
        k_int = operator.index(k)  # accepts int-like (numpy ints), refuses floats and bools below
    except TypeError:
        raise ValueError(f"k must be an integer in [0, {numel}], got k={k!r}") from None
    if isinstance(k, bool) or not 0 <= k_int <= numel:
        raise ValueError(f"k must be an integer in [0, {numel}] (the number of elements), got k={k!r}")
    return k_int


# splitmix64's constants (Steele, Lea and Flood 2014) as signed 64-bit integers: torch has no uint64 arithmetic
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB


def _shift_right(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic: it copies the sign bit)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def draw_seeds(generator: torch.Generator | None, n: int, device: torch.device | str | None = None) -> Tensor:
    """``n`` seeds for :func:`positional_uniform`, drawn from ``generator`` (int64, on its device; no host sync).

    Example:
        >>> draw_seeds(torch.Generator().manual_seed(0), 2).shape
        torch.Size([2])
    """
    where = generator.device if generator is not None else (device or "cpu")
    return torch.randint(0, 2**62, (n,), generator=generator, device=where)


def positional_uniform(seed: Tensor, index: Tensor) -> Tensor:
    """U(0, 1) numbers, one per flat position ``index``: the splitmix64 hash of ``(seed, index)``, 23 bits.

    The number of a position does not depend on which other positions are drawn, in what order or tiling, nor on
    the device: a selection over a layer's tiles, or over its links alone, sees the numbers a selection over the
    whole layer sees. Values are ``(2 j + 1) / 2^24`` for ``j`` in ``[0, 2^23)``: exact in float32, never 0 or 1.

    Example:
        >>> u = positional_uniform(torch.tensor(7), torch.arange(5))
        >>> bool(((u > 0) & (u < 1)).all()), bool(u[2] == positional_uniform(torch.tensor(7), torch.tensor([2]))[0])
        (True, True)
    """
    z = index.long().add(1).mul_(_GOLDEN).add_(seed.to(index.device))
    z = z.bitwise_xor_(_shift_right(z, 30)).mul_(_MIX1)
    z = z.bitwise_xor_(_shift_right(z, 27)).mul_(_MIX2)
    # splitmix64's last step, z ^ (z >> 31), leaves the top 33 bits as they are: the 23 taken here
    return _shift_right(z, 41).mul_(2).add_(1).float().mul_(2.0**-24)


def _uniform_open(seed: Tensor, index: Tensor, like: Tensor) -> Tensor:
    """Positional U(0, 1) at ``index`` in ``like``'s dtype and device (never 0 or 1, so ``ln(-ln U)`` is finite)."""
    return positional_uniform(seed, index.to(like.device)).to(like.dtype)


def _frechet_log_keys(w: Tensor, T: float, U: Tensor) -> Tensor:
    """``T * ln(w (-ln U)^(-1/T)) = T ln w - ln(-ln U)``: same order as the Frechet scores, never overflows.

    Zero weights give ``-inf``; positive weights always give a finite key.
    """
    return w.log().mul_(T).sub_(U.log().neg_().log_())


def frechet_scores(
    weights: Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    where: Tensor | None = None,
) -> Tensor:
    """Frechet keys ``w * (-ln U)^(-1/T)``, ``U ~ U(0, 1)``: their top-k is a sample of ``k`` elements without
    replacement with probability proportional to ``w^T``.

    Larger ``T`` is closer to top-k by magnitude. Zero weights get score 0. Keys are computed in float32 (float64 for
    float64 weights); for ``T`` below about 0.2 the largest keys may overflow to ``inf`` (the selection functions of
    this module rank by log-keys and are unaffected).

    Args:
        weights: non-negative tensor of any shape and size, on any device.
        temperature: ``T > 0``.
        generator: source of ``U``, on ``weights``' device.
        where: optional bool tensor of ``weights``' shape: keys are computed only there and are 0 elsewhere, from the
            same draws (the result equals ``frechet_scores(weights * where)``, with less work when ``where`` is sparse).

    Returns:
        Scores of ``weights``' shape.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> s = frechet_scores(torch.tensor([0.0, 1.0, 2.0, 3.0]), temperature=2.0, generator=g)
        >>> bool(s[0] == 0) and bool((s[1:] > 0).all())
        True
    """
    T = _check_temperature(temperature)
    w = _check_nonnegative(weights, "weights")
    seed = draw_seeds(generator, 1, w.device)[0]
    if where is None:
        U = _uniform_open(seed, torch.arange(w.numel(), device=w.device), w).view(w.shape)
        return _frechet_log_keys(w, T, U).div_(T).exp_()
    if where.shape != weights.shape:
        raise ValueError(f"where must have the shape of weights {tuple(weights.shape)}, got {tuple(where.shape)}")
    idx = true_indices(where)
    w = w.reshape(-1)[idx]
    out = torch.zeros(weights.numel(), dtype=w.dtype, device=w.device)
    out[idx] = _frechet_log_keys(w, T, _uniform_open(seed, idx, w)).div_(T).exp_()
    return out.view(weights.shape)


def frechet_scores_at(
    weights: Tensor, positions: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """:func:`frechet_scores` of a vector of ``weights`` that sit at the flat ``positions`` of a layer (e.g. its
    links): the keys ``frechet_scores(dense, where=mask)`` gives there, with the same generator state.

    Example:
        >>> w, mask = torch.tensor([[0.0, 2.0], [1.0, 0.0]]), torch.tensor([[False, True], [True, False]])
        >>> at = frechet_scores_at(w[mask], torch.tensor([1, 2]), 1.0, torch.Generator().manual_seed(0))
        >>> bool(torch.equal(at, frechet_scores(w, 1.0, torch.Generator().manual_seed(0), where=mask)[mask]))
        True
    """
    T = _check_temperature(temperature)
    w = _check_nonnegative(weights, "weights")
    seed = draw_seeds(generator, 1, w.device)[0]
    return _frechet_log_keys(w, T, _uniform_open(seed, positions, w)).div_(T).exp_()


def topk_mask(key: Tensor, k: int) -> Tensor:
    """Bool mask (shape of ``key``) of the ``k`` largest entries of ``key``; exact count even with ties.

    Example:
        >>> topk_mask(torch.tensor([0.5, 2.0, 1.0]), 2).tolist()
        [False, True, True]
    """
    out = torch.zeros(key.numel(), dtype=torch.bool, device=key.device)
    if k > 0:
        out[top_indices(key.reshape(-1), k)] = True
    return out.view_as(key)


# Large selections on CUDA first keep the entries above a threshold estimated from a sample, then select exactly
# among those: torch.topk's radix select costs several passes over the whole input, a comparison costs one.
_PREFILTER_MIN_N = 1 << 22
_PREFILTER_MIN_K = 1 << 16
_PREFILTER_SAMPLE = 1 << 20


def _prefilter_here(values: Tensor) -> bool:
    return values.device.type == "cuda"


def top_indices(values: Tensor, k: int, largest: bool = True) -> Tensor:
    """Indices of ``k`` largest (or smallest) entries of the 1-D ``values``, in no particular order.

    The same set as ``torch.topk(values, k, largest=largest).indices`` up to the choice among entries tied with the
    k-th. On CUDA, for large ``values`` and ``k``, the entries beyond a threshold estimated from a strided sample are
    kept first (one comparison pass; two host syncs) and the exact selection runs on those; if the estimate keeps
    fewer than ``k`` (improbable: the sample's quantile has a safety margin) the plain selection runs instead.

    Example:
        >>> sorted(top_indices(torch.tensor([0.5, 2.0, 1.0, -1.0]), 2).tolist())
        [1, 2]
    """
    n = values.numel()
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=values.device)
    if not _prefilter_here(values) or n < _PREFILTER_MIN_N or k < _PREFILTER_MIN_K or k > n // 2:
        return torch.topk(values, k, largest=largest, sorted=False).indices
    stride = max(1, n // _PREFILTER_SAMPLE)
    sample = values[::stride]
    m = sample.numel()
    q = k / n  # the share to select; the sample's quantile gets a margin of 4 binomial standard deviations
    k_s = min(m, math.ceil(m * q + 4.0 * math.sqrt(m * q * (1.0 - q)) + 16))
    bound = torch.topk(sample, k_s, largest=largest, sorted=False).values
    beyond = values >= bound.min() if largest else values <= bound.max()
    count = int(beyond.sum())
    if count < k or count > n // 2:
        return torch.topk(values, k, largest=largest, sorted=False).indices
    kept = true_indices(beyond, count)
    sub = values[kept]
    if count - k < k:  # drop the extras rather than select the many
        drop = torch.topk(sub, count - k, largest=not largest, sorted=False).indices
        keep = torch.ones(count, dtype=torch.bool, device=values.device)
        keep[drop] = False
        return kept[keep]
    return kept[torch.topk(sub, k, largest=largest, sorted=False).indices]


def true_indices(mask: Tensor, count: int | None = None) -> Tensor:
    """Flat indices of the True entries of ``mask``, in order.

    ``count``: the number of True entries, when the caller knows it; on CUDA the indices are then found without a
    host synchronisation (``nonzero_static``; on the CPU, where there is none to save, plain ``nonzero`` is faster).
    A wrong count would drop or invent entries, so pass only exact counts.

    Example:
        >>> true_indices(torch.tensor([[True, False], [False, True]]), count=2).tolist()
        [0, 3]
    """
    flat = mask.reshape(-1)
    if count is not None and flat.is_cuda:
        try:
            return flat.nonzero_static(size=count).squeeze(1)
        except (AttributeError, NotImplementedError):  # a torch without nonzero_static, or without it on CUDA
            pass
    return flat.nonzero().squeeze(1)


def keep_top(scores: Tensor, active: Tensor, k: int, *, count: int | None = None) -> Tensor:
    """The ``k`` active positions with the largest ``scores`` (NaN scores count as lowest).

    Works on the active entries alone: of ``n`` active, it keeps the ``k`` largest or drops the ``n - k`` smallest,
    whichever selection is smaller. ``count``: the exact number of active entries, if known (saves a host sync).

    Example:
        >>> keep_top(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([True, True, False]), 1).tolist()
        [True, False, False]
    """
    idx = true_indices(active, count)
    n = idx.numel()
    if k >= n:
        return active.clone()
    key = torch.nan_to_num(scores.reshape(-1)[idx].float(), nan=-torch.inf)
    out = torch.zeros(active.numel(), dtype=torch.bool, device=active.device)
    if k <= 0:
        return out.view_as(active)
    if n - k < k:
        out[idx] = True
        out[idx[top_indices(key, n - k, largest=False)]] = False
    else:
        out[idx[top_indices(key, k)]] = True
    return out.view_as(active)


def keep_top_active(scores: Tensor, k: int) -> Tensor:
    """Which of ``n`` active entries, given their ``scores`` (a vector, NaN lowest), are the ``k`` largest (bool).

    :func:`keep_top` for scores held at the active entries only (a layer's links): the same choice, entry for entry.

    Example:
        >>> keep_top_active(torch.tensor([3.0, 1.0, 2.0]), 2).tolist()
        [True, False, True]
    """
    n = scores.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    out = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return out
    key = torch.nan_to_num(scores.reshape(-1).float(), nan=-torch.inf)
    if n - k < k:
        out.fill_(True)
        out[top_indices(key, n - k, largest=False)] = False
    else:
        out[top_indices(key, k)] = True
    return out


def _keys(scores: Tensor, sampling: str, U: Tensor | None, temperature: float) -> Tensor:
    """:func:`regrowth_keys` from given uniforms ``U`` (of ``scores``' shape; None for ``"topk"``)."""
    if sampling == "topk":
        return scores
    if sampling == "multinomial":
        info = torch.finfo(U.dtype)  # type: ignore[union-attr]
        U = U.clamp(min=info.tiny, max=1.0 - info.eps / 2)  # type: ignore[union-attr]
        return _frechet_log_keys(scores, temperature, U).div_(temperature).exp_()
    return scores * U  # "uniform"


def _check_sampling(sampling: str) -> None:
    if sampling not in ("topk", "multinomial", "uniform"):
        raise ValueError(f"regrowth_sampling must be one of 'topk', 'multinomial', 'uniform'; got {sampling!r}")


def regrowth_keys(
    scores: Tensor, sampling: str, generator: torch.Generator | None, *, temperature: float = 1.0
) -> Tensor:
    """Keys whose largest entries are the regrowth choice under ``sampling``, from non-negative ``scores``.

    ``"topk"``: the scores; ``"multinomial"``: Frechet keys ``s (-ln U)^(-1/T)``, whose top-k is a sample without
    replacement with probability proportional to ``s^T``; ``"uniform"``: ``s * U[0, 1]`` (the CHTs24 soft rule). Keys
    are non-negative, proportional to the scores at ``T = 1`` (0 where the score is 0), so they can also be summed
    over a block.

    Example:
        >>> regrowth_keys(torch.tensor([0.0, 2.0]), "topk", None)
        tensor([0., 2.])
    """
    _check_sampling(sampling)
    U = None if sampling == "topk" else torch.rand(scores.shape, generator=generator, device=scores.device)
    if U is not None and scores.dtype == torch.float64:
        U = U.double()
    return _keys(scores, sampling, U, temperature)


def select_regrowth(
    scores: Tensor,
    candidates: Tensor,
    k: int,
    sampling: str,
    generator: torch.Generator | None,
    *,
    temperature: float = 1.0,
    count: int | None = None,
) -> Tensor:
    """Picks ``k`` of the ``candidates`` from non-negative ``scores``.

    ``sampling`` is ``"topk"`` (largest scores), ``"multinomial"`` (without replacement, probability proportional to
    ``score^temperature``; done with the Gumbel top-k trick so matrices over 2^24 entries work) or ``"uniform"``
    (top-k of score * U[0, 1], the CHTs24 soft rule). Candidates with a positive score always come before zero-score
    ones; when fewer than ``k`` have a positive score the rest are drawn uniformly among the zero-score candidates
    (the papers add a tiny constant to all non-links for the same purpose). The keys are computed on the candidates
    alone, from positional uniforms (so the draws do not depend on where the candidates are).
    ``count``: the exact number of candidates, if known (saves a host sync).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> pick = select_regrowth(torch.tensor([0.0, 3.0, 1.0]), torch.tensor([True, True, False]), 2, "topk", g)
        >>> pick.tolist()
        [True, True, False]
    """
    _check_sampling(sampling)
    idx = true_indices(candidates, count)
    k = min(k, idx.numel())
    if k <= 0:
        return torch.zeros_like(candidates)
    out = torch.zeros(candidates.numel(), dtype=torch.bool, device=candidates.device)
    out[select_at(scores.reshape(-1)[idx], idx, k, sampling, generator, temperature=temperature)] = True
    return out.view_as(candidates)


def select_at(
    scores: Tensor,
    positions: Tensor,
    k: int,
    sampling: str,
    generator: torch.Generator | None,
    *,
    temperature: float = 1.0,
) -> Tensor:
    """:func:`select_regrowth` among candidates given as their ``scores`` and flat ``positions`` (vectors): the
    chosen positions, in no particular order (``min(k, len)`` of them).

    Example:
        >>> select_at(torch.tensor([0.0, 3.0, 1.0]), torch.tensor([4, 7, 9]), 1, "topk", None).tolist()
        [7]
    """
    _check_sampling(sampling)
    k = min(k, positions.numel())
    if k <= 0:
        return positions[:0]
    key = candidate_keys(scores, positions, sampling, draw_seeds(generator, 2, scores.device), temperature)
    return positions[top_indices(key, k)]


def candidate_keys(scores: Tensor, positions: Tensor, sampling: str, seeds: Tensor, temperature: float = 1.0) -> Tensor:
    """The keys :func:`select_regrowth` ranks candidates by: from their ``scores`` and flat ``positions``, and two
    seeds (:func:`draw_seeds`): positive scores give keys > 0 under ``sampling``, zero scores random keys in (-1, 0).

    A selection over tiles of a layer computes the keys of each tile with the same seeds and keeps the largest
    (:func:`select_regrowth` over the whole layer keeps the same ones).
    """
    s = torch.nan_to_num(scores.float(), nan=0.0, posinf=torch.finfo(torch.float32).max).clamp_min_(0.0)
    U = None if sampling == "topk" else positional_uniform(seeds[0], positions)
    # Positive-score candidates get keys > 0 (clamped in case a perturbed key underflowed to 0); zero-score
    # candidates get random keys in (-1, 0).
    key = _keys(s, sampling, U, temperature).clamp_min(torch.finfo(torch.float32).tiny)
    zero = s <= 0
    if key.is_cuda:  # hashing every candidate costs less there than finding the zero-score ones (a host sync)
        return torch.where(zero, positional_uniform(seeds[1], positions).neg_(), key)
    at = zero.nonzero().squeeze(1)
    if at.numel():
        key[at] = positional_uniform(seeds[1], positions[at]).neg_()
    return key


def weighted_sample_without_replacement(
    weights: Tensor, k: int, temperature: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Samples ``k`` entries without replacement with probability proportional to ``weights^T``.

    :func:`select_regrowth` with ``"multinomial"`` sampling over every entry. If fewer than ``k`` weights are
    positive, all of them are taken and the rest are drawn uniformly among the zero-weight entries.

    Args:
        weights: non-negative tensor of any shape, on any device.
        k: number of entries to select, ``0 <= k <= weights.numel()``.
        temperature: ``T > 0``; large ``T`` approaches top-k by weight.
        generator: source of randomness, on ``weights``' device.

    Returns:
        Bool tensor of ``weights``' shape with exactly ``k`` True entries.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> keep = weighted_sample_without_replacement(torch.tensor([0.1, 5.0, 0.0, 2.0]), 2, generator=g)
        >>> int(keep.sum()), bool(keep[2])
        (2, False)
    """
    w = _check_nonnegative(weights, "weights")
    k = _check_k(k, w.numel())
    T = _check_temperature(temperature)
    every = torch.ones(w.shape, dtype=torch.bool, device=w.device)
    return select_regrowth(w, every, k, "multinomial", generator, temperature=T)


def uniform_scaled_topk(scores: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """CHTs24 soft regrowth: the top-k of ``scores * U``, ``U ~ U(0, 1)``.

    :func:`select_regrowth` with ``"uniform"`` sampling over every entry: entries with a positive score always rank
    above zero ones; if fewer than ``k`` are positive, the rest are drawn uniformly among the zero-score entries.

    Args:
        scores: non-negative tensor of any shape (e.g. CH scores of the non-links), on any device.
        k: number of entries to select, ``0 <= k <= scores.numel()``.
        generator: source of ``U``, on ``scores``' device.

    Returns:
        Bool tensor of ``scores``' shape with exactly ``k`` True entries.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> grow = uniform_scaled_topk(torch.tensor([[0.0, 3.0], [1.0, 0.0]]), 3, generator=g)
        >>> int(grow.sum()), bool(grow[0, 1] and grow[1, 0])
        (3, True)
    """
    s = _check_nonnegative(scores, "scores")
    k = _check_k(k, s.numel())
    every = torch.ones(s.shape, dtype=torch.bool, device=s.device)
    return select_regrowth(s, every, k, "uniform", generator)


_ENUMERATE_BELOW = 1 / 8  # candidate share under which drawing positions wastes more than listing them


def sample_positions(
    shape: tuple[int, int],
    k: int,
    excluded: Tensor,
    generator: torch.Generator | None,
    *,
    alive_rows: Tensor | None = None,
    alive_cols: Tensor | None = None,
    count: int | None = None,
) -> Tensor:
    """``k`` positions of an ``(out, in)`` layer drawn uniformly without replacement among the candidates: the
    positions not in ``excluded`` (sorted flat positions, e.g. the links), with an alive row and column if given.

    Works on indices: it draws flat positions, drops excluded and repeated ones and keeps the first ``k`` that remain
    (a uniform ``k``-subset), so its cost follows ``k``, not the layer's size. When candidates are scarce (under 1/8
    of the positions) it lists them instead. ``count``: the number of candidates, if known. Returns sorted flat
    positions (int64); fewer than ``k`` only if there are fewer candidates.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> picked = sample_positions((4, 4), 3, torch.tensor([0, 5, 10, 15]), g)
        >>> picked.numel(), bool(torch.isin(picked, torch.tensor([0, 5, 10, 15])).any())
        (3, False)
    """
    n_out, n_in = shape
    device = excluded.device
    total = n_out * n_in
    rows, cols = alive_rows, alive_cols
    if count is None:
        count = count_outside(shape, excluded, rows, cols)
    k = min(k, count)
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    if count < _ENUMERATE_BELOW * total or k > count // 4:
        every = torch.ones(total, dtype=torch.bool, device=device)
        every[excluded] = False
        if rows is not None or cols is not None:
            every &= _alive_at(torch.arange(total, device=device), n_in, rows, cols)
        cand = true_indices(every, count)
        keys = positional_uniform(draw_seeds(generator, 1, device)[0], cand)
        return cand[top_indices(keys, k)].sort().values
    drawn = torch.zeros(0, dtype=torch.long, device=device)
    share = count / total
    while True:
        have = drawn.numel()
        m = int((k - min(have, k)) / share * 1.25) + 64
        d = torch.randint(0, total, (m,), generator=generator, device=device)
        ok = ~_is_in_sorted(d, excluded)
        if rows is not None or cols is not None:
            ok &= _alive_at(d, n_in, rows, cols)
        drawn = torch.cat([drawn, d[ok]])
        unique, inverse = torch.unique(drawn, return_inverse=True)
        if unique.numel() >= k:  # the first k distinct draws, in the order they came
            first = torch.full((unique.numel(),), drawn.numel(), dtype=torch.long, device=device)
            first.scatter_reduce_(0, inverse, torch.arange(drawn.numel(), device=device), "amin")
            return unique[first.argsort()[:k]].sort().values


def count_outside(shape: tuple[int, int], excluded: Tensor, rows: Tensor | None, cols: Tensor | None) -> int:
    """The positions of a ``shape`` layer with an alive row and column (None: all alive) that are not among the
    flat positions ``excluded``: the candidates of :func:`sample_positions`."""
    n_r = int(rows.sum()) if rows is not None else shape[0]
    n_c = int(cols.sum()) if cols is not None else shape[1]
    if rows is None and cols is None:
        return n_r * n_c - excluded.numel()
    return n_r * n_c - int(_alive_at(excluded, shape[1], rows, cols).sum())


def _is_in_sorted(x: Tensor, sorted_set: Tensor) -> Tensor:
    """Whether each entry of ``x`` is in the sorted 1-D ``sorted_set``."""
    if not sorted_set.numel():
        return torch.zeros_like(x, dtype=torch.bool)
    pos = torch.searchsorted(sorted_set, x).clamp_(max=sorted_set.numel() - 1)
    return sorted_set[pos] == x


def _alive_at(flat: Tensor, n_in: int, rows: Tensor | None, cols: Tensor | None) -> Tensor:
    """Whether the flat positions ``flat`` have an alive row and an alive column (None: all alive)."""
    ok = torch.ones_like(flat, dtype=torch.bool)
    if rows is not None:
        ok &= rows[flat.div(n_in, rounding_mode="floor")]
    if cols is not None:
        ok &= cols[flat.remainder(n_in)]
    return ok
