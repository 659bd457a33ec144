"""Name → constructor registries, one per pluggable axis (experts, datasets, methods).

An unknown name is an error that lists every known one, so a typo in a config never runs the
default silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, entry: T | None = None, description: str = ""):
        """``registry.register("x", obj)`` or ``@registry.register("x")`` above a function/class."""
        def add(obj: T) -> T:
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._descriptions[name] = description or (getattr(obj, "description", "") or "")
            return obj
        return add(entry) if entry is not None else add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}") from None

    def description(self, name: str) -> str:
        self.get(name)
        return self._descriptions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

