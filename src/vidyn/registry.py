"""Strict registries of builder functions.

A builder is a plain function with explicit, typed keyword arguments that returns an object (a model,
a dataset). `register` refuses duplicate names; `build` checks the keyword arguments against the
builder's signature and lists the valid ones when a name or argument is wrong, so a typo in a YAML
file fails loudly instead of being silently ignored.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidyn.errors import VidynError


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., Any]
    family: str
    description: str
    base: str | None = None  # for a variant: the entry whose builder it overrides

    def defaults(self) -> dict[str, Any]:
        """The builder's keyword arguments and their defaults (`inspect.Parameter.empty` if required)."""
        return {p.name: p.default for p in inspect.signature(self.builder).parameters.values()}


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, family: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            doc = inspect.getdoc(builder) or ""
            self._entries[name] = Entry(name, builder, family, doc.split("\n")[0])
            return builder

        return decorator

    def variant(self, name: str, *, of: str, description: str, **overrides: Any) -> None:
        """Register `name` as entry `of` with some defaults replaced (timm-style variants).

        The variant's builder is `functools.partial(base_builder, **overrides)`: every argument of the
        base stays available, only the defaults differ, so a variant never re-declares a signature.
        """
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is registered twice")
        base = self.get(of)
        inspect.signature(base.builder).bind_partial(**overrides)  # a typo in the overrides fails here
        builder = functools.partial(base.builder, **overrides)
        self._entries[name] = Entry(name, builder, base.family, description, base=of)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            valid = ", ".join(sorted(self._entries))
            raise VidynError(f"unknown {self.kind} {name!r}; choose one of: {valid}")
        return self._entries[name]

    def names(self, family: str | None = None) -> list[str]:
        return sorted(n for n, e in self._entries.items() if family is None or e.family == family)

    def check_kwargs(self, name: str, kwargs: dict[str, Any]) -> None:
        entry = self.get(name)
        params = inspect.signature(entry.builder).parameters
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            valid = ", ".join(params) or "(none)"
            raise VidynError(
                f"{self.kind} {name!r} has no argument(s) {', '.join(unknown)}; valid arguments: {valid}"
            )
        missing = [
            p.name for p in params.values() if p.default is inspect.Parameter.empty and p.name not in kwargs
        ]
        if missing:
            raise VidynError(f"{self.kind} {name!r} needs argument(s): {', '.join(missing)}")

    def build(self, name: str, **kwargs: Any) -> Any:
        self.check_kwargs(name, kwargs)
        return self._entries[name].builder(**kwargs)


MODELS = Registry("model")
DATASETS = Registry("dataset")
