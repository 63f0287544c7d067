"""Resonant Sparse Geometry Network (RSGN, seed 004): nodes in the Poincare ball, ignition, propagation, inhibition.

Two variants behind one flag (formulas in ``shared/reference/rsgn.md``):

- ``variant="reference"`` computes what the author's code computes: Euclidean spark-to-node distance for ignition,
  Euclidean inhibition radius, a dense ``N x N`` connection matrix, every node taking part (alpha > 0.01 is true for
  all nodes in practice), an unnormalised readout, a Hebbian reward ``R = -loss`` (never positive) and thresholds
  clipped to ``[0.01, 0.99]``. Its parameter count is the paper's: 41,672 for ``(32, 20)``, 40,382 for ``(32, 10)``.
- ``variant="sparse"`` (the default, our correction) keeps the same parameters but: hyperbolic distance everywhere the
  paper says so (ignition, connections, inhibition); at most ``floor(active_fraction * N)`` active nodes per input
  (top-k on the activation after ignition and after every step, so the other nodes are exactly 0); a soft-threshold
  temperature that can be annealed (``anneal_temperature``) and a drive measured as the RMS of the node update
  (not its norm, which is ~sqrt(hidden) times larger and saturates the sigmoid) so thresholds can switch nodes off;
  message passing and inhibition only over each node's ``num_neighbors`` strongest incoming connections (a fixed
  neighbour list, ``O(N k)`` per step); a readout divided by the total activity; a Hebbian reward centred on its
  running mean, so updates strengthen as well as weaken; and pruning / sprouting of the neighbour list.

Example:
    >>> model = RSGN(32, 20, num_nodes=64, hidden=32, rank=8, steps=2, num_neighbors=8)
    >>> model(torch.randn(4, 16, 32)).shape
    torch.Size([4, 20])
    >>> model.last_activity.shape  # fraction of active nodes per input
    torch.Size([4])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rsgn_geometry import euclidean_pairwise, poincare_distance, poincare_pairwise, project_to_ball

__all__ = ["RSGN"]

Variant = Literal["sparse", "reference"]
ACTIVE = 0.01  # a node with alpha above this sends messages (the paper's active set)


class RSGN(nn.Module):
    """Resonant Sparse Geometry Network for sequence classification: ``(B, T, D)`` -> logits ``(B, C)``.

    Args:
        input_dim: feature dimension ``D`` of each token.
        num_classes: number of output classes ``C``.
        variant: ``"sparse"`` (default, corrected) or ``"reference"`` (as the author's code computes).
        num_nodes: ``N`` nodes.
        ball_dim: dimension of the Poincare ball.
        hidden: node state size.
        rank: rank of the affinity factorisation ``A = U V^T``.
        steps: propagation steps ``K`` (paper: 5 hierarchical, 7 long-range).
        num_neighbors: sparse variant: incoming connections per node (``k``).
        active_fraction: sparse variant: at most this share of nodes is active per input; ``None``: thresholds only.
        target_activity: homeostasis target ``rho`` of each node's mean activation.
        temperature: soft-threshold temperature ``T`` at the start of training.
        temperature_decay: ``T`` of epoch e is ``max(min_temperature, temperature * temperature_decay**e)``
            (see :meth:`start_epoch`). Default: 0.95 for the sparse variant (annealed), 1.0 for the reference.
        min_temperature: floor of the annealed temperature.
        rewire: whether :meth:`end_epoch` prunes and sprouts the neighbour lists. Default: True for the sparse
            variant; the reference has no lists to rewire.
        sigma: ignition width.
        tau: distance temperature of the connection strength.
        level_bias: ``b`` in ``softplus(l_i - l_j + b)``.
        inhibition_radius: radius of the inhibition neighbourhood.
        signal_scale: weight of the node update's size in the soft-threshold input.
        hebbian: False turns the Hebbian affinity update off (the paper's "RSGN without Hebbian" ablation); threshold
            homeostasis still runs.
        hebbian_lr: ``eta`` of the Hebbian affinity update.
        hebbian_decay: multiplicative decay of the affinity factors at each Hebbian update.
        affinity_max_norm: after each Hebbian update every row of the affinity factors ``U``, ``V`` is projected
            back into the ball of this radius, so the affinity logits stay in ``[-max_norm^2, max_norm^2]``.
        threshold_lr: rate of threshold homeostasis.
        reward_momentum: sparse variant: momentum of the running reward mean the reward is centred on.
        prune_threshold: sparse variant: connections weaker than this are pruned by ``prune_and_sprout``.
        sprout_threshold: sparse variant: activity correlation above which an unconnected pair may sprout.

    Example:
        >>> ref = RSGN(32, 20, variant="reference")
        >>> sum(p.numel() for p in ref.parameters())
        41672
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        variant: Variant = "sparse",
        num_nodes: int = 256,
        ball_dim: int = 3,
        hidden: int = 128,
        rank: int = 32,
        steps: int = 5,
        *,
        num_neighbors: int = 16,
        active_fraction: float | None = 0.1,
        target_activity: float = 0.1,
        temperature: float = 1.0,
        temperature_decay: float | None = None,
        min_temperature: float = 0.1,
        rewire: bool | None = None,
        sigma: float = 0.4,
        tau: float = 1.0,
        level_bias: float = 1.0,
        inhibition_radius: float = 0.3,
        signal_scale: float = 0.1,
        hebbian: bool = True,
        hebbian_lr: float = 0.002,
        hebbian_decay: float = 0.995,
        affinity_max_norm: float = 3.0,
        threshold_lr: float = 1e-3,
        reward_momentum: float = 0.9,
        prune_threshold: float = 0.01,
        sprout_threshold: float = 0.7,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if variant not in ("sparse", "reference"):
            raise ValueError(f"variant must be 'sparse' or 'reference', got {variant!r}")
        if variant == "sparse" and not 1 <= num_neighbors < num_nodes:
            raise ValueError(f"num_neighbors must be in [1, num_nodes), got {num_neighbors}")
        if active_fraction is not None and not 0 < active_fraction <= 1:
            raise ValueError(f"active_fraction must be in (0, 1] or None, got {active_fraction}")
        fk = {"device": device, "dtype": dtype}
        N, d, H = num_nodes, ball_dim, hidden
        self.variant = variant
        self.num_nodes, self.steps, self.hidden = N, steps, H
        self.num_neighbors = num_neighbors
        self.active_fraction = active_fraction if variant == "sparse" else None
        self.target_activity = target_activity
        if rewire and variant == "reference":
            raise ValueError("rewire=True needs the sparse variant: the reference variant has no neighbour lists")
        self.temperature = self.initial_temperature = temperature
        default_decay = 0.95 if variant == "sparse" else 1.0  # the sparse variant anneals, the reference does not
        self.temperature_decay = default_decay if temperature_decay is None else temperature_decay
        self.min_temperature = min_temperature
        self.rewire = variant == "sparse" if rewire is None else bool(rewire)
        self.sigma, self.tau, self.level_bias = sigma, tau, level_bias
        self.inhibition_radius, self.signal_scale = inhibition_radius, signal_scale
        self.hebbian_lr, self.hebbian_decay, self.threshold_lr = hebbian_lr, hebbian_decay, threshold_lr
        if not affinity_max_norm > 0:
            raise ValueError(f"affinity_max_norm must be > 0, got {affinity_max_norm}")
        self.affinity_max_norm = affinity_max_norm
        self.hebbian = bool(hebbian)
        self.reward_momentum = reward_momentum
        self.prune_threshold, self.sprout_threshold = prune_threshold, sprout_threshold
        # The reference clips thresholds to [0.01, 0.99]; the sparse drive is O(1), so thresholds up to 3 can
        # switch nodes off (alpha + drive stays below ~2).
        self.threshold_range = (0.01, 0.99) if variant == "reference" else (0.01, 3.0)

        # Slow parameters (also trained by gradient, as in the reference: all parameters are learnable).
        self.positions = nn.Parameter(project_to_ball(torch.randn(N, d, **fk) * 0.3))  # (N, d) in the ball
        self.thresholds = nn.Parameter(torch.full((N,), 0.5, **fk))  # (N,)
        self.levels = nn.Parameter(torch.linspace(0, 1, N, **fk))  # (N,)
        self.affinity_u = nn.Parameter(torch.randn(N, rank, **fk) * 0.1)  # (N, r)
        self.affinity_v = nn.Parameter(torch.randn(N, rank, **fk) * 0.1)  # (N, r)
        # Fast parameters.
        self.spark = nn.Sequential(nn.Linear(input_dim, 4 * d, **fk), nn.GELU(), nn.Linear(4 * d, d, **fk))
        self.spark_scale = nn.Parameter(torch.tensor(0.7, **fk))
        self.init_proj = nn.Linear(input_dim, H, **fk)
        self.transform = nn.Linear(H, H, **fk)  # W_h
        self.norm = nn.LayerNorm(H, **fk)
        self.head = nn.Linear(H, num_classes, **fk)

        # Sparse variant: each node's incoming neighbours (sources), the graph messages and inhibition run on.
        k = num_neighbors if variant == "sparse" else 0
        self.register_buffer("neighbors", torch.zeros(N, k, dtype=torch.long, device=device))  # (N, k)
        self.register_buffer("reward_mean", torch.zeros((), **fk))
        self.register_buffer("reward_count", torch.zeros((), dtype=torch.long, device=device))
        if variant == "sparse":
            self.refresh_neighbors()
        # What the last forward saw, for slow learning and reporting (not state: recomputed by every forward).
        self.last_activity: Tensor | None = None  # (B,) fraction of nodes with alpha > 0.01 at the last step
        self.last_node_activity: Tensor | None = None  # (B, N) activation averaged over the K steps
        self._abar: Tensor | None = None  # (N,) the same averaged over the batch

    # --- geometry and connectivity ------------------------------------------------------------------------------

    def node_positions(self) -> Tensor:
        """Positions projected into the ball (norm <= 0.95), differentiable: ``(N, d)``."""
        return project_to_ball(self.positions)

    @torch.no_grad()
    def project_positions_(self) -> None:
        """Re-projects the stored positions into the ball in place (call after an optimizer step if wanted)."""
        self.positions.copy_(project_to_ball(self.positions))

    def connection_matrix(self) -> Tensor:
        """Dense strengths ``W (N, N)``, ``W[j, i]`` from node j to node i; the diagonal is 0.

        ``W_ji = sigmoid(u_j . v_i) * exp(-d_H(p_j, p_i) / tau) * softplus(l_j - l_i + b)``.
        """
        p = self.node_positions()
        affinity = torch.sigmoid(self.affinity_u @ self.affinity_v.T)  # (N, N)
        decay = torch.exp(-poincare_pairwise(p, p) / self.tau)  # (N, N)
        level = F.softplus(self.levels[:, None] - self.levels[None, :] + self.level_bias)  # (N, N)
        W = affinity * decay * level
        return W * (1 - torch.eye(self.num_nodes, device=W.device, dtype=W.dtype))

    def edge_weights(self) -> Tensor:
        """Sparse variant: strengths of the listed edges only, ``(N, k)``; ``[i, m]`` is ``W[neighbors[i, m], i]``.

        ``O(N k (r + d))``: nothing ``N x N`` is formed.
        """
        src = self.neighbors  # (N, k)
        p = self.node_positions()
        u = self.affinity_u[src]  # (N, k, r)
        affinity = torch.sigmoid((u * self.affinity_v[:, None, :]).sum(-1))  # (N, k)
        decay = torch.exp(-poincare_distance(p[src], p[:, None, :]) / self.tau)  # (N, k)
        level = F.softplus(self.levels[src] - self.levels[:, None] + self.level_bias)  # (N, k)
        return affinity * decay * level

    @torch.no_grad()
    def refresh_neighbors(self) -> None:
        """Sparse variant: sets each node's neighbour list to its ``k`` strongest incoming connections (``O(N^2)``)."""
        W = self.connection_matrix().T.clone()  # (dst, src)
        W.fill_diagonal_(-math.inf)
        self.neighbors.copy_(W.topk(self.num_neighbors, dim=1).indices)

    def _message_matrix(self) -> Tensor:
        """Sparse variant: the ``(N_dst, N_src)`` COO matrix of the listed edges, differentiable in its values."""
        N, k = self.neighbors.shape
        dst = torch.arange(N, device=self.neighbors.device).repeat_interleave(k)
        idx = torch.stack([dst, self.neighbors.reshape(-1)])  # (2, N k)
        return torch.sparse_coo_tensor(idx, self.edge_weights().reshape(-1), (N, N), check_invariants=False).coalesce()

    # --- ignition, propagation, inhibition --------------------------------------------------------------------

    def sparks(self, x: Tensor) -> Tensor:
        """Spark points ``proj(a * tanh(MLP(x)))`` of the tokens ``x (B, T, D)``: ``(B, T, d)``."""
        return project_to_ball(self.spark_scale * torch.tanh(self.spark(x)))

    def ignition(self, sparks: Tensor) -> Tensor:
        """Initial activation ``exp(-min_t dist(s_t, p_i)^2 / (2 sigma^2))`` of every node: ``(B, N)``.

        Hyperbolic distance in the sparse variant (the paper), Euclidean in the reference (its code); the sparse
        variant then keeps only the most activated ``active_fraction`` of the nodes.
        """
        p = self.node_positions()
        dist = poincare_pairwise(sparks, p) if self.variant == "sparse" else euclidean_pairwise(sparks, p)  # (B,T,N)
        alpha = torch.exp(-dist.amin(1).square() / (2 * self.sigma**2))  # (B, N)
        return self._top_k(alpha)

    def _top_k(self, alpha: Tensor) -> Tensor:
        """Keeps the ``floor(active_fraction * N)`` largest activations per input, zeroes the rest."""
        if self.active_fraction is None:
            return alpha
        k = max(1, int(self.active_fraction * self.num_nodes))
        vals, idx = alpha.topk(k, dim=1)
        return torch.zeros_like(alpha).scatter(1, idx, vals)

    def _inhibition_reference(self) -> Tensor:
        """Reference: ``(N, N)`` 0/1 neighbourhoods, Euclidean distance < radius (self included)."""
        p = self.node_positions().detach()
        return (euclidean_pairwise(p, p) < self.inhibition_radius).to(p.dtype)

    def _inhibition_sparse(self) -> Tensor:
        """Sparse: ``(N, k)`` 0/1, listed neighbours within hyperbolic distance < radius (self added separately)."""
        p = self.node_positions().detach()
        return (poincare_distance(p[self.neighbors], p[:, None, :]) < self.inhibition_radius).to(p.dtype)

    def inhibit(self, alpha: Tensor, near: Tensor) -> Tensor:
        """Local divisive inhibition within each node's neighbourhood ``N_i``: ``(B, N)``.

        Reference: ``clip(alpha_i |N_i| / (sum_{j in N_i} alpha_j + 1e-6), 0, 1)``. This divides by the neighbourhood
        mean, so it lifts every neighbourhood's mean to 1 and a node alone in its neighbourhood to ~1 whatever its
        activity: it works against sparsity. Sparse: ``alpha_i * min(1, that ratio)``: nodes below their
        neighbourhood's mean are suppressed in proportion, the others keep their activity (winner-take-more,
        never an increase).
        """
        if self.variant == "reference":
            total, count = alpha @ near, near.sum(0)  # (B, N), (N,); near is symmetric
            return (alpha * count / (total + 1e-6)).clamp(0, 1)
        total = alpha + (alpha[:, self.neighbors] * near).sum(-1)  # (B, N): self + neighbours within radius
        count = 1 + near.sum(1)  # (N,)
        return alpha * (alpha * count / (total + 1e-6)).clamp(0, 1)

    def propagate_messages(self, g: Tensor, graph: Tensor) -> Tensor:
        """``m_i = sum_j W_ji g_j`` for states ``g (B, N, H)``: dense ``W`` (reference) or listed edges (sparse)."""
        if self.variant == "reference":
            return torch.einsum("ji,bjh->bih", graph, g)  # (B, N, H)
        B, N, H = g.shape
        flat = g.permute(1, 0, 2).reshape(N, B * H)  # (N, B H)
        return torch.sparse.mm(graph, flat).reshape(N, B, H).permute(1, 0, 2)  # (B, N, H)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, C)`` for token sequences ``x (B, T, D)``; sets ``last_activity`` ``(B,)``."""
        if x.dim() != 3:
            raise ValueError(f"RSGN expects (batch, seq_len, input_dim) inputs, got shape {tuple(x.shape)}")
        sparse = self.variant == "sparse"
        graph = self._message_matrix() if sparse else self.connection_matrix()
        near = self._inhibition_sparse() if sparse else self._inhibition_reference()
        theta = self.thresholds  # (N,)

        alpha = self.ignition(self.sparks(x))  # (B, N)
        h = alpha[..., None] * self.init_proj(x.mean(1))[:, None, :]  # (B, N, H)
        alpha_sum = torch.zeros_like(alpha)
        for _ in range(self.steps):
            g = (alpha * (alpha > ACTIVE))[..., None] * h  # (B, N, H): only active nodes send
            update = self.transform(self.propagate_messages(g, graph))  # (B, N, H)
            drive = update.norm(dim=-1)  # (B, N)
            if sparse:
                drive = drive / math.sqrt(self.hidden)  # RMS: O(1), so thresholds matter
            alpha = torch.sigmoid((alpha + self.signal_scale * drive - theta) / self.temperature)
            if sparse:
                alpha = self._top_k(self.inhibit(alpha, near))
                h = self.norm(update + h) * alpha[..., None]
            else:
                h = self.norm(update + h) * alpha[..., None]
                alpha = self.inhibit(alpha, near)
            alpha_sum = alpha_sum + alpha
        y = (alpha[..., None] * h).sum(1)  # (B, H)
        if sparse:
            y = y / (alpha.sum(1, keepdim=True) + 1e-6)  # a weighted mean, not a sum over 256 states
        self.last_activity = (alpha > ACTIVE).float().mean(1).detach()
        self.last_node_activity = (alpha_sum / max(self.steps, 1)).detach()
        self._abar = self.last_node_activity.mean(0)
        return self.head(y)

    # --- slow learning ----------------------------------------------------------------------------------------

    def start_epoch(self, epoch: int) -> float:
        """Sets the soft-threshold temperature of ``epoch`` (counting from 0) from the schedule; returns it.

        A function of the epoch alone, so a resumed run gets the same temperature as an uninterrupted one.
        """
        self.temperature = max(self.min_temperature, self.initial_temperature * self.temperature_decay**epoch)
        return self.temperature

    def end_epoch(self) -> tuple[int, int]:
        """Structural plasticity once per epoch: :meth:`prune_and_sprout` when ``rewire`` is on, else nothing."""
        return self.prune_and_sprout() if self.rewire else (0, 0)

    def anneal_temperature(self, factor: float = 0.9, minimum: float = 0.1) -> float:
        """Multiplies the soft-threshold temperature by ``factor`` (not below ``minimum``); returns the new value."""
        self.temperature = max(minimum, self.temperature * factor)
        return self.temperature

    @torch.no_grad()
    def homeostasis_step(self) -> None:
        """``theta_i <- clip(theta_i + threshold_lr (abar_i - rho))``: busy nodes get harder to activate."""
        abar = self._require_activity()
        self.thresholds.add_(self.threshold_lr * (abar - self.target_activity)).clamp_(*self.threshold_range)

    @torch.no_grad()
    def hebbian_update(self, reward: float) -> float:
        """Slow learning after a forward pass: reward-modulated Hebbian affinity update, then homeostasis.

        The affinity change ``Delta A = eta R abar abar^T`` is applied to the factors as
        ``U <- decay U + (eta R / N) abar (abar^T V)``, ``V <- decay V + (eta R / N) abar (abar^T U)`` (``Delta A V``,
        the factor step that moves ``U V^T`` along ``abar abar^T``, averaged over the ``N`` partner nodes), then every
        factor row is projected into the ball of radius ``affinity_max_norm``: ``abar^T U V^T abar``, the affinity
        among co-active nodes, grows when ``R > 0`` and shrinks when ``R < 0``. The reference uses ``R = reward``
        (the caller passes ``-loss``); the sparse variant uses ``R = reward - running mean`` (0 on the first call),
        so better-than-usual batches strengthen co-active connections and worse ones weaken them.

        Why the mean and the projection: the step feeds ``V`` into ``U`` and back, a linear map with gain
        ``decay + eta |R| |abar|^2 / N``. Summed over partners (no ``1/N``) that gain is about ``eta |R| N`` when all
        nodes are active, as in the reference (about 100 at loss 200): the factors overflow within 20 updates and
        training turns to NaN. The mean keeps the gain near ``decay + eta |R|``, and the projection bounds what a
        gain above 1 (a persistently large ``|R|``) can do.

        Returns:
            The modulating reward ``R`` used (0 with ``hebbian=False``).
        """
        abar = self._require_activity()
        if not self.hebbian:  # the ablation: no affinity change (nor its decay), homeostasis only
            self.homeostasis_step()
            return 0.0
        reward = float(reward)
        if self.variant == "sparse":
            first = int(self.reward_count) == 0
            R = 0.0 if first else reward - float(self.reward_mean)
            m = 0.0 if first else self.reward_momentum
            self.reward_mean.mul_(m).add_((1 - m) * reward)
            self.reward_count.add_(1)
        else:
            R = reward
        U, V = self.affinity_u, self.affinity_v
        au, av = abar @ U, abar @ V  # (r,), (r,)
        step = self.hebbian_lr * R / self.num_nodes
        U.mul_(self.hebbian_decay).add_(step * torch.outer(abar, av))
        V.mul_(self.hebbian_decay).add_(step * torch.outer(abar, au))
        for factor in (U, V):  # max-norm projection of each node's factor row
            factor.mul_((self.affinity_max_norm / factor.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0))
        self.homeostasis_step()
        return R

    @torch.no_grad()
    def prune_and_sprout(self) -> tuple[int, int]:
        """Sparse variant: rewires the neighbour lists, keeping ``k`` edges per node.

        Listed edges weaker than ``prune_threshold`` are pruned; each freed slot goes first to an unconnected node
        whose activity (last forward, per input) correlates with this node's above ``sprout_threshold`` (most
        correlated first), otherwise to the strongest unconnected node. ``O(N^2)``: call it rarely (per epoch).

        Returns:
            ``(pruned, sprouted)``: edges removed, and how many of their replacements were correlation sprouts.
        """
        if self.variant != "sparse":
            raise RuntimeError("prune_and_sprout rewires the sparse variant's neighbour lists; reference is dense")
        N = self.num_nodes
        Wt = self.connection_matrix().T  # (dst, src)
        rows = torch.arange(N, device=Wt.device)[:, None]
        weak = Wt[rows, self.neighbors] < self.prune_threshold  # (N, k)
        act = self.last_node_activity
        corr = torch.zeros_like(Wt)
        if act is not None and act.shape[0] > 1:
            corr = torch.nan_to_num(torch.corrcoef(act.T.to(Wt.dtype)))  # (N, N); constant nodes -> 0
        sprout = corr > self.sprout_threshold  # symmetric, so [dst, src] indexing is fine
        priority = torch.where(sprout, 10 + corr, Wt)  # sprouts first, then the strongest by W (W < 10)
        priority.fill_diagonal_(-math.inf)
        # Listed edges: strong ones stay (+inf), pruned ones are not taken back at once (-inf).
        priority.scatter_(1, self.neighbors, torch.where(weak, -math.inf, math.inf))
        new = priority.topk(self.neighbors.shape[1], dim=1).indices  # (N, k)
        old_mask = torch.zeros_like(sprout).scatter_(1, self.neighbors, True)
        added = torch.zeros_like(sprout).scatter_(1, new, True) & ~old_mask
        self.neighbors.copy_(new)
        return int(weak.sum()), int((added & sprout).sum())

    def _require_activity(self) -> Tensor:
        if self._abar is None:
            raise RuntimeError("run a forward pass before slow learning: it needs the last activations")
        return self._abar
