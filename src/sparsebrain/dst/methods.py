"""Method presets: every DST method is one ``MethodConfig``; any field can be overridden by keyword."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .._validation import check_density, check_fraction, check_positive_int, unknown_name_error

__all__ = ["METHODS", "MethodConfig", "list_methods", "resolve_method"]

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
    zeta: float = 0.3  # fraction of active links removed (and regrown) at each update
    zeta_schedule: str = "constant"  # constant or cosine (decays to 0 at the end of the update phase)
    temperature: tuple[float, float] = (1.0, 1.0)  # soft-removal T at the start and end of the update phase
    temperature_schedule: str = "linear"
    update_interval: int = 100  # optimizer steps between topology updates (Delta_T)
    end_fraction: float = 0.75  # no topology update after end_fraction * total_steps
    percolation: bool = False  # active-neuron percolation along chains of sparse layers
    options: dict[str, Any] = field(default_factory=dict)  # rule options, e.g. {"mest_lambda": 0.01}

    def validate(self) -> MethodConfig:
        """Checks every field, raising ``ValueError`` that names the field and the allowed values."""
        from ..topology.allocation import ALLOCATIONS
        from ..topology.initial import INITS
        from .regrowth import REGROWTHS
        from .removal import REMOVALS
        from .schedules import DENSITY_SCHEDULES, TEMPERATURE_SCHEDULES, ZETA_SCHEDULES

        if not self.sparse:
            return self
        INITS.get(self.init)
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
        check_fraction(self.zeta, "zeta")
        check_positive_int(self.update_interval, "update_interval")
        check_fraction(self.end_fraction, "end_fraction", closed_low=False)
        t0, t1 = self.temperature
        if t0 <= 0 or t1 <= 0:
            raise ValueError(f"temperature must be a pair of positive numbers (start, end), got {self.temperature!r}")
        return self

    def needs_total_steps(self) -> bool:
        """True when a schedule depends on the length of training."""
        return (
            self.density_schedule != "constant"
            or self.zeta_schedule != "constant"
            or (self.temperature_schedule != "constant" and self.temperature[0] != self.temperature[1])
        )


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
    cfg.temperature = (float(cfg.temperature[0]), float(cfg.temperature[1]))
    return cfg.validate()
