"""DynamicSparsifier: prune-and-grow written once, for every method, constraint and storage.

The removal rule scores active links, the regrowth rule scores non-links; the layer's constraint (unstructured or
N:M) turns the scores into the new mask; this engine does the rest: it conserves the number of links (or follows the
density schedule), has the layers rewire themselves (new weights at 0), resets optimizer state where links changed,
applies active-neuron percolation, and keeps masks identical across processes through a distribution strategy. It
never touches a layer's tensors: it reads each layer's topology and asks the layer to rewire
(:class:`~sparsebrain.nn.SparseLayer`). A layer that holds only its links hands over
:class:`~sparsebrain.topology.links.Links` instead of a mask, and the whole update then runs on index sets and row
tiles of scores, never on an ``(out, in)`` tensor; the random numbers are positional, so it picks what the update of
the same layer's mask picks.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._validation import check_density, check_seed
from ..nn import LAYERS, SparseLayer
from ..nn.layer import StateMoved
from ..nn.sparsify import FilterFn, chosen_linears, sparse_layers, sparsify_
from ..topology.allocation import check_no_empty_layer, link_counts
from ..topology.constraints import Regrowth, Unstructured
from ..topology.links import Links, dense_tiles
from ..topology.percolation import (
    Junction,
    active_neuron_fraction,
    alive_neurons,
    layer_active_fraction,
    percolate,
)
from ..topology.sampling import keep_top_active, true_indices
from .context import LayerView, UpdateContext
from .distributed import Strategy, strategy_for
from .methods import MethodConfig, resolve_method
from .optimizer_state import reset_state_
from .regrowth import REGROWTHS
from .removal import REMOVALS
from .schedules import DENSITY_SCHEDULES, TEMPERATURE_SCHEDULES, ZETA_SCHEDULES

__all__ = ["DynamicSparsifier", "ScheduleError", "auto_junctions"]


def auto_junctions(model: nn.Module, layers: Mapping[str, SparseLayer]) -> list[Junction]:
    """Junctions along which percolation runs.

    A model may declare them with a method ``sparse_junctions() -> list[Junction]`` (sparsebrain's models do).
    Otherwise consecutive sparse layers in registration order form a chain wherever the outputs of one match the
    inputs of the next (a plain MLP); declare junctions explicitly for anything with skips or branches.
    """
    declared = getattr(model, "sparse_junctions", None)
    if callable(declared):
        return [j for j in declared() if all(n in layers for n in (*j.producers, *j.consumers))]
    names = list(layers)
    return [
        Junction(producers=(a,), consumers=(b,))
        for a, b in zip(names, names[1:])
        if layers[a].out_features == layers[b].in_features
    ]


def _to_host(values: Mapping[str, Tensor]) -> dict[str, Any]:
    """Each 0-d tensor of ``values`` as a Python number, in one host sync per device (layers may sit on several)."""
    by_device: dict[torch.device, list[str]] = {}
    for name, v in values.items():
        by_device.setdefault(v.device, []).append(name)
    out: dict[str, Any] = {}
    for names in by_device.values():
        out.update(zip(names, torch.stack([values[n] for n in names]).tolist()))
    return {n: out[n] for n in values}


def _trained_weight(module: nn.Module) -> Tensor:
    """The Parameter holding a layer's weights: a sparse layer's link weights, an ``nn.Linear``'s weight."""
    return module.weight_parameter() if isinstance(module, SparseLayer) else module.weight  # type: ignore[return-value]


class ScheduleError(ValueError):
    """A schedule that cannot do what it promises in the run's length (e.g. no topology update to reach the density)."""


def _plain(value: Any) -> Any:
    """``value`` as plain data (what ``torch.load(weights_only=True)`` reads back), for comparing method settings."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if torch.is_tensor(value):
        return f"tensor of shape {tuple(value.shape)}"
    return getattr(value, "__qualname__", None) or repr(value)  # e.g. a callable init or rule


class DynamicSparsifier:
    """Dynamic sparse training of a model's linear layers: call :meth:`step` after ``optimizer.step()``.

    Args:
        model: the model; its chosen ``nn.Linear`` layers are made sparse unless it already has sparse layers.
        optimizer: the optimizer of ``model`` (its state is reset where links change); may be None.
        method: a preset name (see :func:`sparsebrain.list_methods`) or a ``MethodConfig``.
        density: target fraction of links kept in the sparse layers, in (0, 1]. Default: N/M for an N:M method
            (``chts24``: 0.5, ``chts14``: 0.25; any other value is refused), else 0.05.
        total_steps: number of optimizer steps of the whole training; needed by every non-constant schedule
            and by ``end_fraction``. Without it, topology updates never stop.
        filter_fn: ``(fqn, module) -> bool`` choosing the sparse layers (default: the model's own
            ``sparse_filter`` or every Linear but the last).
        seed: seed of the engine's random generator, an integer in [0, 2^63 - 1]; default drawn from torch's global
            generator.
        junctions: "auto", or an explicit list of :class:`~sparsebrain.topology.percolation.Junction`.
        strategy: how the processes of a distributed run agree (:mod:`sparsebrain.dst.distributed`); default:
            data parallel when a process group is initialised, else a single process.
        device: where the sparse layers are built; needed for a model on the meta device, whose layers are then
            materialised there (with ``storage="compressed"``, only their links).
        **overrides: any ``MethodConfig`` field, e.g. ``regrowth="ch3_l3p"``, ``update_interval=500``.

    Example:
        >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> sp = DynamicSparsifier(model, opt, method="set", density=0.2, total_steps=100, update_interval=10)
        >>> round(sp.stats()["density"], 2)
        0.2
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        method: str | MethodConfig = "chtss",
        density: float | None = None,
        total_steps: int | None = None,
        filter_fn: FilterFn | None = None,
        *,
        seed: int | None = None,
        junctions: Literal["auto"] | Sequence[Junction] = "auto",
        strategy: Strategy | None = None,
        device: torch.device | str | None = None,
        **overrides: Any,
    ) -> None:
        self.config = resolve_method(method, **overrides)
        self.constraint = self.config.constraint
        fixed = self.constraint.density if self.config.sparse else None
        if density is not None:
            density = check_density(density)  # a number first: the pattern check below does arithmetic on it
        if fixed is not None and density is not None and abs(density - fixed) > 1e-9:
            raise ValueError(
                f"method {self.config.name!r} uses the {self.config.pattern} pattern, whose density is "
                f"{fixed:g}; pass density={fixed:g} or leave it out (got density={density!r})"
            )
        if density is None:
            density = fixed if fixed is not None else 0.05
        self.density = check_density(density)
        bad_steps = isinstance(total_steps, bool) or (total_steps is not None and total_steps < 1)
        if total_steps is not None and (bad_steps or int(total_steps) != total_steps):
            raise ValueError(f"total_steps must be a positive integer or None, got {total_steps!r}")
        if total_steps is None and self.config.sparse and self.config.dynamic and self.config.needs_total_steps():
            raise ValueError(
                f"method {self.config.name!r} uses a schedule that depends on the length of training "
                "(density, zeta or temperature); pass total_steps"
            )
        self.model = model
        self.optimizer = optimizer
        self.total_steps = total_steps
        cfg = self.config
        self._static_warning: str | None = None
        self._check_schedule()
        self._auto_strategy = strategy is None
        self.strategy = strategy if strategy is not None else strategy_for(model)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = self.strategy.agree_seed(check_seed(seed))  # every rank must draw the same numbers
        self._generators: dict[str, torch.Generator] = {}
        self._step = 0
        self._updates = 0
        self._last: dict[str, dict[str, int]] = {}

        self.layers: dict[str, SparseLayer] = {}
        if cfg.sparse:
            existing = sparse_layers(model)
            if existing:
                self.layers = {n: m for n, m in existing.items() if filter_fn is None or filter_fn(n, m)}
                if not self.layers:
                    raise ValueError(f"filter_fn matched none of the model's sparse layers: {list(existing)}")
                self._check_existing_layers()
            chosen = list(self.layers.items()) or chosen_linears(model, filter_fn)
            # refusals come before the model is touched (sparsify_ checks the start density itself)
            if fixed is None:
                names, shapes = [n for n, _ in chosen], [(m.out_features, m.in_features) for _, m in chosen]
                check_no_empty_layer(names, shapes, self.density, cfg.allocation)
            self._check_optimizer(chosen)
            if not existing:
                where = torch.device(device) if device is not None else next(model.parameters()).device
                if where.type == "meta":
                    raise ValueError("the model is on the meta device: pass device= (where its sparse layers live)")
                self.layers = sparsify_(
                    model,
                    self._start_density,
                    filter_fn,
                    cfg.init,
                    constraint=self.constraint,
                    layer=cfg.layer,
                    layer_options=cfg.layer_options,
                    init_kwargs=cfg.init_kwargs,
                    allocation=cfg.allocation,
                    weight_init=cfg.weight_init,
                    skip_incompatible=cfg.skip_incompatible,
                    generator=self._generator(where),
                    storage=cfg.storage,
                    device=device,
                )
            self._reset_optimizer_state({n: m.state_kept_at_sparsify() for n, m in self.layers.items()})
        self._param_names = self._parameter_names()
        self.junctions: list[Junction] = (
            (auto_junctions(model, self.layers) if junctions == "auto" else list(junctions)) if cfg.percolation else []
        )
        # Rules are resolved once: step() runs every optimizer step and must stay cheap.
        self._removal = REMOVALS.get(cfg.removal)
        self._density_removal = REMOVALS.get(cfg.density_removal)
        self._regrowth = REGROWTHS.get(cfg.regrowth) if cfg.regrowth else None
        rules = [self._removal] + ([self._regrowth] if self._regrowth else [])
        self._needs_grad = any(getattr(r, "needs_grad", False) for r in rules)
        self._capturing = False
        self._checked = False
        self._optimizer_steps = self._optimizer_steps_used = 0
        self._warned_no_optimizer_step = False
        self._step_hook: Any = None
        self._bind(optimizer)
        if self._static_warning:  # once the sparsifier stands: a refused one says only why it was refused
            warnings.warn(self._static_warning, UserWarning, stacklevel=2)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Gives the sparsifier its optimizer after construction, e.g. once ``fully_shard`` replaced the parameters.

        The sharded flow: ``sp = DynamicSparsifier(model, None, ...)`` (the model is made sparse), then
        ``fully_shard(...)``, ``opt = torch.optim.AdamW(model.parameters(), ...)`` and ``sp.attach(opt)``: the
        sparsifier then uses the :class:`~sparsebrain.dst.distributed.FSDP2` strategy (unless one was given),
        agrees the masks over the ranks and zeroes every shard off them.

        Example:
            >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> sp = DynamicSparsifier(model, None, method="set", density=0.5, total_steps=100, update_interval=10)
            >>> sp.attach(torch.optim.SGD(model.parameters(), lr=0.1))
        """
        self.optimizer = optimizer
        self._check_optimizer(list(self.layers.items()))
        self._param_names = self._parameter_names()
        if self._auto_strategy:
            self.strategy = strategy_for(self.model)
        masks = self.strategy.agree_masks({n: self._topology(m) for n, m in self.layers.items()})
        with torch.no_grad():  # every rank's shard (or replica) off the agreed masks is zero, and its state too
            self._reset_optimizer_state({n: self.layers[n].rewire_(mask) for n, mask in masks.items()})
        self._bind(optimizer)

    def _bind(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Installs the strategy on the layers, and counts the optimizer's real steps through a step post hook.

        A step skipped (a GradScaler on inf/NaN gradients) or missing must not advance the schedule nor rewire on
        that step's gradients.
        """
        self.strategy.check(self.layers, counts_change=self._counts_change)
        self.strategy.install(self.layers)
        self._capturing = self._needs_grad and self.is_update_step(self._step + 1)
        self.strategy.capture_dense_grads_(self.layers, self._capturing)
        if self._step_hook is not None:
            self._step_hook.remove()
            self._step_hook = None
        self._optimizer_steps = self._optimizer_steps_used = 0
        if optimizer is not None and hasattr(optimizer, "register_step_post_hook"):
            this = weakref.ref(self)

            def count(*_: Any) -> None:
                me = this()
                if me is not None:
                    me._optimizer_steps += 1

            self._step_hook = optimizer.register_step_post_hook(count)

    @property
    def _start_density(self) -> float:
        """The density at step 0."""
        return self.density if self.config.initial_density is None else self.config.initial_density

    @property
    def _density_moves(self) -> bool:
        """Whether a density schedule moves the density from another start to the target over the updates."""
        return self.config.density_schedule != "constant" and self._start_density != self.density

    @property
    def _counts_change(self) -> bool:
        """Whether the layers' numbers of links move over training."""
        return self.config.sparse and self.config.dynamic and self._density_moves

    def _check_schedule(self) -> None:
        """Refuses a density schedule that gets no topology update (it would end at its start density, silently)."""
        cfg = self.config
        n = self.num_updates
        if not (cfg.sparse and cfg.dynamic) or n is None or n >= 1:
            return
        why = (
            f"with update_interval={cfg.update_interval}, end_fraction={cfg.end_fraction:g} and "
            f"total_steps={self.total_steps} it would get {n} topology updates (updates run every update_interval "
            f"steps up to step end_fraction * total_steps = {self.t_end})"
        )
        start = self._start_density
        if self._density_moves:
            raise ScheduleError(
                f"method {cfg.name!r} moves the density from {start:g} to {self.density:g} over its topology updates, "
                f"but {why}, so it would stay at {start:g}; lower update_interval or raise total_steps or end_fraction"
            )
        self._static_warning = f"method {cfg.name!r} rewires the topology, but {why}: it trains as static sparse"

    def _check_optimizer(self, chosen: Sequence[tuple[str, nn.Module]]) -> None:
        """Refuses an optimizer that trains none of the sparse layers' weights; warns about one that misses some."""
        if self.optimizer is None:
            return
        held = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        missing = [name for name, m in chosen if id(_trained_weight(m)) not in held]
        if len(missing) == len(chosen):
            raise ValueError(
                f"the optimizer holds none of the sparse layers' weights ({', '.join(missing)}): build it on this "
                "model's parameters (e.g. torch.optim.SGD(model.parameters(), ...)) before creating the sparsifier"
            )
        if missing:
            warnings.warn(
                f"the optimizer does not hold the weights of sparse layers {', '.join(missing)}: they are rewired "
                "but not trained",
                UserWarning,
                stacklevel=3,
            )

    # ----------------------------------------------------------------------------------------------------------
    # schedule

    @property
    def t_end(self) -> int | None:
        """Last step at which the topology may change (``end_fraction * total_steps``), None if unbounded."""
        return None if self.total_steps is None else int(self.config.end_fraction * self.total_steps)

    @property
    def num_updates(self) -> int | None:
        """Number of topology updates in the whole run, None if unbounded."""
        return None if self.t_end is None else self.t_end // self.config.update_interval

    def is_update_step(self, step: int) -> bool:
        """Whether the ``step``-th call of :meth:`step` (counting from 1) rewires the topology."""
        cfg = self.config
        if not (cfg.sparse and cfg.dynamic) or step < 1 or step % cfg.update_interval:
            return False
        return self.t_end is None or step <= self.t_end

    def scheduled_density(self, update_index: int) -> float:
        """Target overall density after the ``update_index``-th update (0 = the start)."""
        cfg = self.config
        start = self._start_density
        n = self.num_updates
        p = 1.0 if not n else min(update_index / n, 1.0)
        if update_index == 0:
            p = 0.0
        return DENSITY_SCHEDULES.get(cfg.density_schedule)(p, start, self.density)

    def _progress(self, step: int) -> float:
        return 0.0 if not self.t_end else min(step / self.t_end, 1.0)

    # ----------------------------------------------------------------------------------------------------------
    # training-loop API

    def step(self) -> bool:
        """Advances one optimizer step; on update steps rewires the topology. Returns True if it did.

        With an optimizer, only a step that follows a real ``optimizer.step()`` counts: one skipped by a
        ``GradScaler`` (inf/NaN gradients) advances nothing and its gradients are dropped; a call with no optimizer
        step since the last one warns, once. A step that rewires nothing costs no device work and no host-device
        synchronisation.
        """
        if self._step_hook is not None:
            if self._optimizer_steps == self._optimizer_steps_used:
                if not self._warned_no_optimizer_step:
                    self._warned_no_optimizer_step = True
                    warnings.warn(
                        "DynamicSparsifier.step() was called with no optimizer.step() since its last call (call it "
                        "right after optimizer.step(); a GradScaler skips optimizer steps on inf/NaN gradients): the "
                        "schedule did not advance and the topology was not updated",
                        UserWarning,
                        stacklevel=2,
                    )
                if self._capturing:  # the skipped step's captured gradients must not feed the next update
                    self.strategy.capture_dense_grads_(self.layers, True)
                return False
            self._optimizer_steps_used = self._optimizer_steps
        if not self.config.sparse:
            self._step += 1
            return False
        if not self._checked:  # once: e.g. a model sharded after the sparsifier was built, without attach()
            self.strategy.check(self.layers, counts_change=self._counts_change)
            self._checked = True
        nxt = self._step + 1
        updated = False
        if self.is_update_step(nxt):
            self._update(nxt)  # raises (changing nothing, step counter included) on non-finite weights
            updated = True
        self._step = nxt
        self._sync_capture(fresh=updated)
        return updated

    def _sync_capture(self, fresh: bool = True) -> None:
        """Dense gradients are captured exactly on the steps before an update; toggled only when that changes.

        ``fresh``: the captured gradients were used (or may be stale), so a capture that stays on starts over.
        """
        want = self._needs_grad and self.is_update_step(self._step + 1)
        if want != self._capturing or (want and fresh):
            self.strategy.capture_dense_grads_(self.layers, want)
            self._capturing = want

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._generators[key] = g
        return self._generators[key]

    # ----------------------------------------------------------------------------------------------------------
    # the topology update

    def _targets(self, density: float) -> dict[str, int]:
        shapes = [(m.out_features, m.in_features) for m in self.layers.values()]
        return dict(zip(self.layers, link_counts(self.config.allocation, shapes, density)))

    @staticmethod
    def _topology(layer: SparseLayer) -> Tensor | Links:
        """The layer's links as the update works on them: :class:`Links` where the layer holds only its links (no
        ``(out, in)`` tensor is built), else its bool mask."""
        links = layer.links()
        return links if links is not None else layer.topology()

    @torch.no_grad()
    def _update(self, step: int) -> None:
        """One topology update: removal, (percolation), regrowth under the constraint, and the layers' rewiring."""
        cfg = self.config
        self.strategy.check(self.layers, counts_change=self._counts_change)
        old = {n: self._topology(m) for n, m in self.layers.items()}
        held = [n for n, t in old.items() if isinstance(t, Links)]  # layers updated on their links alone, in order
        weights = {n: self.strategy.full(m.dense_weight()) for n, m in self.layers.items() if n not in held}
        values = {n: self.strategy.full(self.layers[n].link_values()) for n in held}
        # max |w| is finite exactly when every weight is (NaN and inf propagate): one reduction per layer
        largest = _to_host(
            {n: torch.linalg.vector_norm(w.detach(), float("inf")) for n, w in (weights | values).items() if w.numel()}
        )
        for name, value in largest.items():
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"non-finite (NaN or inf) weights in sparse layer {name!r} at step {step}; "
                    "the topology was left unchanged"
                )
        index = self._updates + 1
        p = self._progress(step)
        zeta = ZETA_SCHEDULES.get(cfg.zeta_schedule)(p, cfg.zeta, 0.0)
        temperature = TEMPERATURE_SCHEDULES.get(cfg.temperature_schedule)(p, *cfg.temperature)
        targets = self._targets(self.scheduled_density(index))
        grads = {
            n: g for n, m in self.layers.items() if n not in held and (g := self.strategy.dense_grad(n, m)) is not None
        }
        link_grads = {n: self.strategy.mean_(g) for n in held if (g := self.layers[n].link_grad()) is not None}
        # Link counts are read once for every layer; after that the update knows them (selections are exact), so
        # the selections below find their indices without a host sync.
        old_links: dict[str, int] = _to_host({n: o.sum() for n, o in old.items() if n not in held})
        old_links.update({n: old[n].count for n in held})
        score_stats: dict[str, Tensor] = {}
        uniform = getattr(self._regrowth, "uniform", False) and isinstance(self.constraint, Unstructured)

        def ctx(name: str) -> UpdateContext:
            return UpdateContext(step, index, p, zeta, temperature, self._generator(old[name].device), cfg.options)

        def view(name: str, mask: Tensor | Links, count: int | None = None) -> LayerView:
            v = LayerView(
                name,
                self.layers[name],
                mask,
                grads.get(name),
                full_weight=weights.get(name),
                link_weight=values.get(name),
                link_grad=link_grads.get(name),
                reduce=self.strategy.mean_,
            )
            if count is not None and not isinstance(mask, Links):  # the links' positions without a host sync
                v.__dict__["_positions"] = true_indices(mask, count)
            return v

        def keep(rule: Any, v: LayerView, k: int, c: UpdateContext) -> Tensor | Links:
            """The ``k`` links of ``v`` that ``rule`` scores highest."""
            scores = rule(v, c)
            if scores.dim() == 2:  # a rule scoring the whole (out, in) layer
                scores = scores.reshape(-1)[v.positions]
            kept = keep_top_active(scores, k)
            if isinstance(v.mask, Links):
                return v.mask.keep(kept)
            out = torch.zeros(v.mask.numel(), dtype=torch.bool, device=v.mask.device)
            out[v.positions[kept]] = True
            return out.view_as(v.mask)

        def remove(name: str) -> tuple[Tensor | Links, int]:
            """The links kept and their number: pruned to the scheduled density first, then the zeta share by the
            removal rule."""
            mask, n_active = old[name], old_links[name]
            if n_active > targets[name]:  # the density schedule asks for fewer links
                mask = keep(self._density_removal, view(name, mask, n_active), targets[name], ctx(name))
                n_active = targets[name]
            n_remove = round(zeta * n_active) if self._regrowth is not None else 0
            if n_remove:
                mask = keep(self._removal, view(name, mask, n_active), n_active - n_remove, ctx(name))
            return mask, n_active - n_remove

        def regrow(name: str, kept: Tensor | Links, kept_links: int | None, allowed: Any) -> Tensor | Links:
            if self._regrowth is None or not self.constraint.grows(kept, targets[name], kept_links):
                return kept
            c = ctx(name)
            scores = tiles = None
            if name in held and not uniform:
                tiles = self._tiles(view(name, kept), c)
            elif not uniform:
                scores = self._regrowth(view(name, kept), c)
                n_absent = old[name].numel() - old_links[name]
                if n_absent:  # statistics over all absent links, read in _commit's host sync
                    absent_scores = scores.reshape(-1)[true_indices(~old[name], n_absent)].float()
                    var, mean = torch.var_mean(absent_scores, correction=0)
                    score_stats[name] = torch.stack([mean, var])
            request = Regrowth(
                old=old[name],
                kept=kept,
                scores=scores,
                tiles=tiles,
                links=targets[name],
                sampling=cfg.regrowth_sampling,
                generator=c.generator,
                allowed=allowed,
                candidates=cfg.regrowth_candidates,
                survivor_boost=cfg.survivor_boost,
                old_links=old_links[name],
                kept_links=kept_links,
            )
            return self.constraint.select(request)

        if self.junctions:  # percolation sees every layer: all removals come before any regrowth
            kept, _ = percolate({n: remove(n)[0] for n in self.layers}, self.junctions)
            kept_links = _to_host({n: k.sum() for n, k in kept.items() if n not in held})
            kept_links.update({n: kept[n].count for n in held})  # percolation cut an unknown number
            allowed = self._alive_positions(kept)
            new = {n: regrow(n, kept[n], kept_links[n], allowed.get(n)) for n in self.layers}
        else:
            new = {n: regrow(n, *remove(n), None) for n in self.layers}
        self._commit(old, old_links, new, score_stats, index)

    def _tiles(self, v: LayerView, c: UpdateContext) -> Any:
        """The regrowth rule's scores of a layer holding its links, as a function giving row tiles."""
        rule = self._regrowth
        tiles = getattr(rule, "tiles", None)
        if tiles is not None:
            return lambda: tiles(v, c)
        # a rule without a tiled form scores the whole layer: its (out, in) mask and scores, once
        dense = LayerView(v.name, v.module, v.mask.to_mask(), v.grad, link_grad=v.link_grad, reduce=v.reduce)  # type: ignore[union-attr]
        return lambda: dense_tiles(lambda: rule(dense, c))  # type: ignore[misc]

    def _commit(
        self,
        old: Mapping[str, Tensor | Links],
        old_links: Mapping[str, int],
        masks: Mapping[str, Tensor | Links],
        score_stats: Mapping[str, Tensor],
        index: int,
    ) -> None:
        """Makes ``masks`` the topology (as the strategy agrees), records the scores' statistics, counts the update."""
        masks = self.strategy.agree_masks(masks)
        kept: dict[str, dict[str, Tensor | StateMoved]] = {}

        def stay_after(o: Tensor | Links, m: Tensor | Links) -> Tensor:
            if isinstance(m, Links):
                return torch.stack([m.contains(o.flat).sum(), torch.tensor(m.count, device=m.device)])  # type: ignore[union-attr]
            return torch.stack([(o & m).sum(), m.sum()])  # type: ignore[operator]

        counts = _to_host({n: stay_after(old[n], masks[n]) for n in old})
        stats = _to_host(score_stats)
        for name, layer in self.layers.items():
            stay, after = counts[name]
            self._last[name] = {"removed": old_links[name] - stay, "regrown": after - stay}
            kept[name] = layer.rewire_(masks[name])
        self._reset_optimizer_state(kept)
        for name, (mean, var) in stats.items():
            self._last[name].update(score_mean=mean, score_var=var)
        self._updates = index

    def _check_existing_layers(self) -> None:
        """Layers already in the model must be the method's kind of layer, and satisfy its constraint."""
        cfg = self.config
        kind, compressed = LAYERS.get(cfg.layer), LAYERS.get("compressed")
        # a masked method may find its links held compressed, unless it asks for the masked storage
        kinds = (kind, compressed) if kind is LAYERS.get("masked") and cfg.storage != "masked" else (kind,)
        for name, layer in self.layers.items():
            if not isinstance(layer, kinds):
                hint = (
                    ", which holds only its links: pass storage='compressed' (or 'auto')"
                    if isinstance(layer, compressed)
                    else ""
                )
                raise ValueError(
                    f"method {cfg.name!r} needs {kind.__name__} layers (layer={cfg.layer!r}, storage="
                    f"{cfg.storage!r}); layer {name!r} is {type(layer).__name__}{hint}"
                )
            if not isinstance(self.constraint, Unstructured) and not self.constraint.allows(layer.topology()):
                raise ValueError(
                    f"the mask of layer {name!r} (shape {tuple(layer.topology().shape)}) is not {self.constraint}, "
                    f"which method {cfg.name!r} needs"
                )

    def _alive_positions(self, masks: Mapping[str, Tensor | Links]) -> dict[str, tuple[Tensor | None, Tensor | None]]:
        """Per layer, its rows and columns that are alive junction neurons (None: a side in no junction)."""
        rows: dict[str, Tensor] = {}
        cols: dict[str, Tensor] = {}
        for j in self.junctions:
            alive = alive_neurons(masks, j)  # (n,)
            for p in j.producers:
                rows[p] = alive if p not in rows else rows[p] & alive
            for c in j.consumers:
                cols[c] = alive if c not in cols else cols[c] & alive
        return {name: (rows.get(name), cols.get(name)) for name in set(rows) | set(cols)}

    def _reset_optimizer_state(self, keep: Mapping[str, Mapping[str, Tensor | StateMoved]]) -> None:
        """Zeroes optimizer state (momentum, Adam moments, ...) of each layer's parameters where the layer says."""
        if self.optimizer is None:
            return
        for name, per_param in keep.items():
            layer = self.layers[name]
            for param_name, where in per_param.items():
                reset_state_(self.optimizer, layer.get_parameter(param_name), where)

    # ----------------------------------------------------------------------------------------------------------
    # reporting and checkpointing

    def stats(self) -> dict[str, Any]:
        """Per-layer density, links, active-neuron fractions and the links changed at the last update.

        Returns a dict with ``step``, ``updates``, ``density`` (over all sparse layers), ``anp`` (active neurons /
        all neurons, see :func:`~sparsebrain.topology.percolation.active_neuron_fraction`) and ``layers``.
        """
        layers: dict[str, Any] = {}
        links = total = 0
        masks = {n: self._topology(m) for n, m in self.layers.items()}
        for name, mask in masks.items():
            n = mask.count if isinstance(mask, Links) else int(mask.sum())
            a_in, a_out = layer_active_fraction(mask)
            last = {"removed": 0, "regrown": 0, "score_mean": None, "score_var": None, **self._last.get(name, {})}
            layers[name] = {
                "density": n / mask.numel(),
                "links": n,
                "anp_in": a_in,
                "anp_out": a_out,
                "removed": last["removed"],
                "regrown": last["regrown"],
                "changed_fraction": last["regrown"] / n if n else 0.0,
                "score_mean": last["score_mean"],  # regrowth scores over the candidate links at the last update
                "score_var": last["score_var"],
            }
            links += n
            total += mask.numel()
        junctions = self.junctions or auto_junctions(self.model, self.layers)
        return {
            "step": self._step,
            "updates": self._updates,
            "density": links / total if total else 1.0,
            "anp": active_neuron_fraction(masks, junctions) if masks else 1.0,
            "layers": layers,
        }

    def _parameter_names(self) -> dict[str, str]:
        by_id = {id(p): n for n, p in self.model.named_parameters()}
        return {name: by_id.get(id(layer.weight_parameter()), f"{name}.weight") for name, layer in self.layers.items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume identically (masks and weights travel in ``model.state_dict()``).

        Per-layer entries are keyed by the weight's parameter name (``"0.weight"``); random generator states
        are included so a resumed run draws the same numbers.
        """
        return {
            "method": self.config.name,
            "density": self.density,
            "config": _plain(dataclasses.asdict(self.config)),
            "total_steps": self.total_steps,
            "seed": self.seed,
            "step": self._step,
            "updates": self._updates,
            "generators": {k: g.get_state() for k, g in self._generators.items()},
            "layers": {self._param_names[n]: dict(self._last.get(n, {})) for n in self.layers},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; the model's state (masks, weights) is loaded separately.

        Raises:
            ValueError: the state belongs to another method, density or set of layers (nothing is changed).
        """
        expected = set(self._param_names.values())
        got = set(state["layers"])
        if got != expected:
            raise ValueError(
                f"sparsifier state is for layers {sorted(got)}, but this sparsifier has {sorted(expected)}"
            )
        if state.get("method") != self.config.name or float(state.get("density", -1.0)) != self.density:
            raise ValueError(
                f"sparsifier state is for method {state.get('method')!r} at density {state.get('density')!r}, but "
                f"this sparsifier runs method {self.config.name!r} at density {self.density!r}"
            )
        if "config" in state:  # states written before the method's settings were recorded hold method and density
            ours = _plain(dataclasses.asdict(self.config))
            # settings that one of the two versions does not have are not compared (the method config grows)
            changed = sorted(k for k in ours.keys() & state["config"].keys() if ours[k] != state["config"][k])
            if changed:
                shown = ", ".join(f"{k}={state['config'].get(k)!r} (here {ours.get(k)!r})" for k in changed)
                raise ValueError(f"sparsifier state is for other settings of method {self.config.name!r}: {shown}")
        self.seed = int(state["seed"])
        self._step = int(state["step"])
        self._updates = int(state["updates"])
        for key, gen_state in state["generators"].items():
            # a checkpoint loaded with map_location may have moved the state; Generator.set_state wants a CPU tensor
            self._generator(torch.device(key)).set_state(gen_state.cpu())
        by_param = {v: k for k, v in self._param_names.items()}
        self._last = {by_param[p]: dict(v) for p, v in state["layers"].items() if v}
        self._sync_capture()

    def __repr__(self) -> str:
        steps = "unbounded" if self.total_steps is None else self.total_steps
        return (
            f"DynamicSparsifier(method={self.config.name!r}, density={self.density}, layers={len(self.layers)}, "
            f"total_steps={steps}, step={self._step})"
        )
