"""Name -> function registries for initialisations, removal rules, regrowth rules, schedules and methods.

A new rule is a registered function, not an edit of the engine::

    @sb.register_regrowth("correlation")
    def correlation(layer, ctx):
        return ctx.generator_rand_like(layer.mask)  # any (out, in) float score
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ._validation import unknown_name_error

__all__ = ["Registry"]

F = TypeVar("F")


class Registry(Generic[F]):
    """A small named registry (timm-style): ``register`` as decorator, ``get`` by name or pass-through callable."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, F] = {}

    def register(self, name: str, fn: F | None = None, *, overwrite: bool = False) -> Callable[[F], F] | F:
        """Registers ``fn`` under ``name``; usable as ``@registry.register("name")``."""

        def deco(f: F) -> F:
            if name in self._items and not overwrite:
                raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
            self._items[name] = f
            return f

        return deco(fn) if fn is not None else deco

    def get(self, name: str | F) -> F:
        """Returns the entry called ``name``; a callable is returned unchanged."""
        if callable(name):
            return name  # type: ignore[return-value]
        if not isinstance(name, str) or name not in self._items:
            raise unknown_name_error(self.kind, str(name), self._items)
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
