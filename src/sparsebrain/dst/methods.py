"""Method presets: every DST method is one ``MethodConfig``; any field can be overridden by keyword."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._validation import _real, check_density, check_fraction, check_positive_int, unknown_name_error
from ..topology.constraints import CANDIDATE_RULES as REGROWTH_CANDIDATES

if TYPE_CHECKING:
    from ..topology.constraints import Constraint

__all__ = ["METHODS", "REGROWTH_CANDIDATES", "MethodConfig", "list_methods", "resolve_method"]

_SAMPLINGS = ("topk", "multinomial", "uniform")


@dataclass
class MethodConfig:
    """How a model is sparsified and rewired. Defaults are those of SET; presets below set the papers' values."""

    name: str = "custom"
    sparse: bool = True  # False: dense training, the sparsifier does nothing
    dynamic: bool = True  # False: the initial topology never changes (static sparse training)
    init: str = "er"  # initial topology (sparsebrain.topology.INITS)
    init_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"r": 0.3} for BRF
    allocation: str = "uniform"  # per-layer density: "uniform" or "erk"
    weight_init: str = "swi"  # "swi": N(0, 2 / (density * fan_in)), variance-preserving; "keep": the model's, masked
    initial_density: float | None = None  # density at step 0; None = the target density
    density_schedule: str = "constant"  # from initial_density to the target: constant, sigmoid, cubic, linear
    density_removal: str = "magnitude"  # rule that prunes down to a lower scheduled density
    removal: str = "magnitude"  # removal rule (sparsebrain.dst.REMOVALS)
    regrowth: str | None = "random"  # regrowth rule (sparsebrain.dst.REGROWTHS); None = prune only
    regrowth_sampling: str = "topk"  # topk, multinomial (prop. to score), uniform (score * U[0,1], top-k)
    # Which non-links regrowth picks from: "absent" = links absent before the update, so a link removed now is not
    # regrown now (ours; when fewer absent links remain than must grow, all of them grow and the rest come from the
    # just-removed ones); "after_removal" = any non-link after removal, a re-picked link keeping its weight (TF RigL,
    # rigl-torch and the CHT/CHTs authors' code)
    regrowth_candidates: str = "absent"
    zeta: float = 0.3  # fraction of active links removed (and regrown) at each update
    zeta_schedule: str = "constant"  # constant or cosine (decays to 0 at the end of the update phase)
    temperature: tuple[float, float] = (1.0, 1.0)  # soft-removal T at the start and end of the update phase
    temperature_schedule: str = "linear"
    update_interval: int = 100  # optimizer steps between topology updates (Delta_T)
    end_fraction: float = 0.75  # no topology update after end_fraction * total_steps
    percolation: bool = False  # active-neuron percolation along chains of sparse layers
    # N:M semi-structured sparsity (sparsebrain.topology.nm): the pattern is applied when links are selected
    pattern: str | None = None  # "N:M", e.g. "2:4" (density N/M); None = unstructured
    # transposable (W and W^T both N:M: every N:M preset's layout) or rowwise (groups along in_features: NVIDIA ASP's)
    pattern_layout: str = "transposable"
    survivor_boost: bool = True  # N:M regrowth: links that survived removal outrank every candidate
    skip_incompatible: bool = False  # N:M: leave layers whose shape cannot hold the pattern dense, instead of raising
    # the sparse layer that holds the links (sparsebrain.nn.LAYERS): "masked" (weights only on the mask) or "ste"
    # (dense master weights, forward with the best N:M pattern of |W|, straight-through gradient)
    layer: str = "masked"
    layer_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"decay": 2e-4}: SR-STE's lambda for "ste"
    # how a masked layer holds its links (sparsebrain.nn.storage): "masked" (a dense weight on a mask),
    # "compressed" (only the links: memory and work that shrink with density; unstructured only),
    # "semi_structured" (transposable 2:4 / 1:4 also held for the 2:4 sparse tensor cores) or "auto"
    storage: str = "masked"
    options: dict[str, Any] = field(default_factory=dict)  # rule options, e.g. {"mest_lambda": 0.01}

    def _validate_storage(self, layer: type, constraint: Constraint) -> None:
        from ..nn.storage import check_fits

        check_fits(self.storage, layer, constraint)

    def validate(self) -> MethodConfig:
        """Checks every field, raising ``ValueError`` that names the field and the allowed values."""
        from ..nn import LAYERS
        from ..topology.allocation import ALLOCATIONS
        from ..topology.initial import INITS
        from ..topology.nm import LAYOUTS
        from .regrowth import REGROWTHS
        from .removal import REMOVALS
        from .schedules import DENSITY_SCHEDULES, TEMPERATURE_SCHEDULES, ZETA_SCHEDULES

        if not self.sparse:
            return self
        if self.pattern is not None and self.pattern_layout not in LAYOUTS:
            raise unknown_name_error("pattern_layout", self.pattern_layout, LAYOUTS)
        constraint = self.constraint  # raises on a bad pattern
        layer = LAYERS.get(self.layer)
        init = INITS.get(self.init)
        if not constraint.accepts_init(init):
            if constraint.density is None:
                raise ValueError(f"init={self.init!r} needs an N:M pattern: set pattern, e.g. pattern='2:4'")
            fitting = [name for name in INITS.names() if constraint.accepts_init(INITS.get(name))]
            raise ValueError(
                f"with an N:M pattern, init must be one of {', '.join(map(repr, fitting))} "
                f"(a random pattern per block, or the best pattern of the current |W|); got {self.init!r}"
            )
        if layer.needs_pattern and constraint.density is None:
            raise ValueError(f"layer={self.layer!r} needs an N:M pattern: set pattern, e.g. pattern='2:4'")
        pattern_options = constraint.init_kwargs() if layer.needs_pattern else {}
        layer.check_options({**pattern_options, **self.layer_options})
        self._validate_storage(layer, constraint)
        if layer.dense_master_weights and self.weight_init != "keep":
            raise ValueError(f"layer={self.layer!r} keeps dense master weights: weight_init must be 'keep'")
        if self.dynamic and not layer.rewirable:
            raise ValueError(f"layer={self.layer!r} derives its topology from its weights: set dynamic=False")
        if constraint.density is not None:
            self._validate_pattern()
        ALLOCATIONS.get(self.allocation)
        if self.weight_init not in ("keep", "swi"):
            raise ValueError(f"weight_init must be one of 'keep', 'swi'; got {self.weight_init!r}")
        if self.initial_density is not None:
            check_density(self.initial_density, "initial_density")
        DENSITY_SCHEDULES.get(self.density_schedule)
        ZETA_SCHEDULES.get(self.zeta_schedule)
        TEMPERATURE_SCHEDULES.get(self.temperature_schedule)
        REMOVALS.get(self.removal)
        REMOVALS.get(self.density_removal)
        if self.regrowth is not None:
            REGROWTHS.get(self.regrowth)
        if self.regrowth_sampling not in _SAMPLINGS:
            raise unknown_name_error("regrowth_sampling", self.regrowth_sampling, _SAMPLINGS)
        if self.regrowth_candidates not in REGROWTH_CANDIDATES:
            raise ValueError(
                f"regrowth_candidates must be one of {', '.join(map(repr, REGROWTH_CANDIDATES))}, "
                f"got {self.regrowth_candidates!r}"
            )
        check_fraction(self.zeta, "zeta")
        check_positive_int(self.update_interval, "update_interval")
        check_fraction(self.end_fraction, "end_fraction", closed_low=False)
        t0, t1 = _temperature_pair(self.temperature)
        # NaN fails every comparison, so finiteness is checked explicitly: a NaN or infinite temperature would
        # only show as NaN scores at the first topology update
        if not all(math.isfinite(t) and t > 0 for t in (t0, t1)):
            raise ValueError(f"temperature must be a pair of finite numbers > 0 (start, end), got {self.temperature!r}")
        for field_name in ("init_kwargs", "options", "layer_options"):  # rule parameters, e.g. r, beta, mest_lambda
            for key, value in getattr(self, field_name).items():
                if isinstance(value, numbers.Real) and not math.isfinite(value):
                    raise ValueError(f"{field_name}[{key!r}] must be finite, got {value!r}")
        return self

    def _validate_pattern(self) -> None:
        clash = {
            "initial_density": self.initial_density is not None,
            "density_schedule": self.density_schedule != "constant",
            "percolation": self.percolation,
        }
        for key, bad in clash.items():
            if bad:
                raise ValueError(f"{key} cannot be used with an N:M pattern: the pattern fixes the density at N/M")
        if self.dynamic and self.regrowth is None:
            raise ValueError("a dynamic N:M method needs a regrowth rule: every block must keep N links per row")

    @property
    def constraint(self) -> Constraint:
        """The allowed masks: unstructured, or the N:M pattern in ``pattern_layout``."""
        from ..topology.constraints import constraint_of

        return constraint_of(self.pattern, self.pattern_layout)

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(n, m)`` of the pattern, None when unstructured."""
        c = self.constraint
        return None if c.density is None else (c.n, c.m)  # type: ignore[attr-defined]

    def needs_total_steps(self) -> bool:
        """True when a schedule depends on the length of training."""
        if not self.dynamic:
            return False
        return (
            self.density_schedule != "constant"
            or self.zeta_schedule != "constant"
            or (self.temperature_schedule != "constant" and self.temperature[0] != self.temperature[1])
        )


def _temperature_pair(value: Any) -> tuple[float, float]:
    """``(start, end)`` as floats; ``ValueError`` for anything but two numbers (a list from YAML is fine)."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"temperature must be a pair of finite numbers > 0 (start, end), got {value!r}")
    try:
        return _real(value[0], "temperature", "> 0"), _real(value[1], "temperature", "> 0")
    except TypeError:
        raise ValueError(f"temperature must be a pair of finite numbers > 0 (start, end), got {value!r}") from None


_SOFT_CH = dict(
    init="brf",
    init_kwargs={"r": 0.3, "degree": "uniform"},
    weight_init="swi",
    removal="soft_magnitude",
    regrowth="ch2_l3n",
    regrowth_sampling="multinomial",
    temperature=(1.0, 3.0),
    percolation=True,
)

_SOFT_NM = dict(
    init="nm_random",
    weight_init="keep",
    removal="soft_magnitude",
    regrowth="ch2_l3n",
    regrowth_sampling="uniform",
    zeta=0.1,
    temperature=(1.0, 9.0),
)
# STE / SR-STE: dense master weights computing with the best pattern of |W| (the layer "ste"); nothing is rewired
_STE = dict(layer="ste", dynamic=False, init="nm_magnitude", weight_init="keep")

METHODS: dict[str, MethodConfig] = {
    "dense": MethodConfig(name="dense", sparse=False),
    "static": MethodConfig(name="static", dynamic=False),
    "set": MethodConfig(name="set", removal="magnitude", regrowth="random"),
    "rigl": MethodConfig(name="rigl", removal="magnitude", regrowth="gradient", zeta_schedule="cosine"),
    "mest": MethodConfig(name="mest", removal="mest", regrowth="random", options={"mest_lambda": 0.01}),
    "gmp": MethodConfig(
        name="gmp", initial_density=1.0, density_schedule="cubic", removal="magnitude", regrowth=None, zeta=0.0
    ),
    "granet": MethodConfig(
        name="granet",
        initial_density=0.5,
        density_schedule="cubic",
        removal="magnitude",
        regrowth="gradient",
        zeta=0.5,
        zeta_schedule="cosine",
    ),
    "cht": MethodConfig(
        name="cht",
        init="bsw",
        init_kwargs={"beta": 0.25},
        weight_init="swi",
        removal="magnitude",
        regrowth="ch3_l3p",
        regrowth_sampling="topk",
        percolation=True,
    ),
    "chts": MethodConfig(name="chts", **_SOFT_CH),  # type: ignore[arg-type]
    "chtss": MethodConfig(
        name="chtss", initial_density=0.5, density_schedule="sigmoid", density_removal="ri", **_SOFT_CH
    ),  # type: ignore[arg-type]
    # Hardware-shaped sparsity (CHTs24 paper): soft removal, soft CH2-L3n regrowth (score * U[0,1]), survivor boost,
    # best transposable pattern per block; the temperature anneals 1 -> 9 (pretraining; eDSrT retraining uses 1 -> 3).
    "chts24": MethodConfig(name="chts24", pattern="2:4", **_SOFT_NM),  # type: ignore[arg-type]
    "chts14": MethodConfig(name="chts14", pattern="1:4", **_SOFT_NM),  # type: ignore[arg-type]
    "ste": MethodConfig(name="ste", pattern="2:4", **_STE),  # type: ignore[arg-type]
    "srste": MethodConfig(name="srste", pattern="2:4", layer_options={"decay": 2e-4}, **_STE),  # type: ignore[arg-type]
    "ste14": MethodConfig(name="ste14", pattern="1:4", **_STE),  # type: ignore[arg-type]
    "srste14": MethodConfig(name="srste14", pattern="1:4", layer_options={"decay": 2e-4}, **_STE),  # type: ignore[arg-type]
    # NVIDIA ASP's recipe: one-shot best-magnitude 2:4 projection of the current weights, then a fixed mask. Like every
    # N:M preset here it takes the transposable layout; ASP's own default is row-wise 2:4 (apex's "m4n2_1d": 2 of
    # every 4 weights along in_features), which pattern_layout="rowwise" gives.
    "asp": MethodConfig(name="asp", pattern="2:4", dynamic=False, init="nm_magnitude", weight_init="keep"),
}


def list_methods() -> list[str]:
    """Names of the method presets.

    Example:
        >>> "chtss" in list_methods()
        True
    """
    return sorted(METHODS)


def resolve_method(method: str | MethodConfig, **overrides: Any) -> MethodConfig:
    """Returns a validated copy of the preset ``method`` with ``overrides`` applied.

    Example:
        >>> resolve_method("chts", regrowth="ch3_l3p").regrowth
        'ch3_l3p'
    """
    if isinstance(method, MethodConfig):
        base = method
    elif method in METHODS:
        base = METHODS[method]
    else:
        raise unknown_name_error("method", str(method), METHODS)
    names = {f.name for f in dataclasses.fields(MethodConfig)}
    for key in overrides:
        if key not in names:
            raise unknown_name_error("method option", key, names - {"name"})
    cfg = dataclasses.replace(base, **overrides)
    cfg.init_kwargs = dict(cfg.init_kwargs)
    cfg.options = dict(cfg.options)
    cfg.layer_options = dict(cfg.layer_options)
    cfg.temperature = _temperature_pair(cfg.temperature)
    return cfg.validate()
