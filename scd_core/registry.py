"""Name -> class registries, so that configs and search spaces can name variants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _Family(Generic[T]):
    """Entries named ``prefix:<member>`` that are built on demand rather than registered one by
    one (e.g. ``pyg:GATv2Conv``: any suitable layer of an external library)."""

    resolve: Callable[[str], T]  # member -> entry; raises LookupError saying why it is not one
    members: Callable[[], list[str]]  # the valid members, for error messages


class Registry(Generic[T]):
    """A mapping from config names to classes, filled with the ``register`` decorator, plus
    prefixed families resolved on demand (``register_family``).

    >>> GRAPH = Registry("graph layer")
    >>> @GRAPH.register("gat")
    ... class GAT: ...
    >>> GRAPH.get("gat") is GAT
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._families: dict[str, _Family[T]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def register_family(self, prefix: str, resolve: Callable[[str], T], members: Callable[[], list[str]]) -> None:
        """Make ``get(f"{prefix}:{member}")`` return ``resolve(member)``.

        ``resolve`` raises ``LookupError`` with the reason when ``member`` is not valid (it
        should cache: ``get`` and ``in`` call it each time); ``members()`` lists the valid
        ones for the error message.
        """
        if prefix in self._families:
            raise ValueError(f"{self.kind} family {prefix!r}: is registered twice")
        self._families[prefix] = _Family(resolve, members)

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        prefix, colon, member = name.partition(":")
        family = self._families.get(prefix) if colon else None
        if family is None:
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of {self.names()}"
                           + "".join(f" or {p}:<name>" for p in sorted(self._families)))
        try:
            return family.resolve(member)
        except LookupError as err:
            raise KeyError(f"unknown {self.kind} {name!r}: {err.args[0]}; "
                           f"choose one of {self.family_members(prefix)}") from None

    def names(self) -> list[str]:
        """The registered names (families' members are not listed: see ``family_members``)."""
        return sorted(self._entries)

    def family_members(self, prefix: str) -> list[str]:
        """``["pyg:GATConv", ...]``: the valid names of one family."""
        return [f"{prefix}:{m}" for m in self._families[prefix].members()]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except KeyError:
            return False
        return True
