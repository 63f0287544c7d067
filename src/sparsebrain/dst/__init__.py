"""The dynamic sparse training engine: rules, schedules, method presets and the DynamicSparsifier."""

from .context import LayerView, UpdateContext
from .methods import METHODS, MethodConfig, list_methods, resolve_method
from .regrowth import REGROWTHS, register_regrowth
from .removal import REMOVALS, register_removal, relative_importance
from .schedules import DENSITY_SCHEDULES, TEMPERATURE_SCHEDULES, ZETA_SCHEDULES
from .sparsifier import DynamicSparsifier, ScheduleError, auto_junctions

__all__ = [
    "DENSITY_SCHEDULES",
    "METHODS",
    "REGROWTHS",
    "REMOVALS",
    "TEMPERATURE_SCHEDULES",
    "ZETA_SCHEDULES",
    "DynamicSparsifier",
    "LayerView",
    "MethodConfig",
    "ScheduleError",
    "UpdateContext",
    "auto_junctions",
    "list_methods",
    "register_regrowth",
    "register_removal",
    "relative_importance",
    "resolve_method",
]
