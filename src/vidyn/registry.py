"""Strict registries of builder functions.

A builder is a plain function (or class) with explicit, typed keyword arguments that returns an object (a
model, a dataset, a training task). `register` refuses duplicate names; `build` checks the keyword
arguments against the builder's signature and lists the valid ones when a name or argument is wrong, so a
typo in a YAML file fails loudly instead of being silently ignored.
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
    provided: tuple[str, ...] = ()  # arguments the caller supplies, never the user (a task's model)

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The builder's user-facing parameters (those the caller provides left out)."""
        params = inspect.signature(self.builder).parameters
        return {n: p for n, p in params.items() if n not in self.provided}

    def defaults(self) -> dict[str, Any]:
        """The builder's keyword arguments and their defaults (`inspect.Parameter.empty` if required)."""
        return {n: p.default for n, p in self.parameters().items()}


class Registry:
    """Builders by name. `provided`: argument names every caller passes itself (e.g. a task's `model`);
    they are not user arguments, so `check_kwargs` neither asks for them nor lists them."""

    def __init__(self, kind: str, provided: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.provided = provided
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, family: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            doc = inspect.getdoc(builder) or ""
            self._entries[name] = Entry(name, builder, family, doc.split("\n")[0], provided=self.provided)
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
        self._entries[name] = Entry(name, builder, base.family, description, base=of, provided=self.provided)

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
        """Refuse unknown user arguments (listing the valid ones) and missing required ones."""
        entry = self.get(name)
        params = entry.parameters()
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

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build `name`: positional `args` are the caller-provided arguments, `kwargs` the user's."""
        self.check_kwargs(name, kwargs)
        return self._entries[name].builder(*args, **kwargs)


MODELS = Registry("model")
DATASETS = Registry("dataset")
# A task trains one model family; its builder takes `(model, run)` from the engine and the config's
# `task.args` as keywords. Its family is the model family it trains.
TASKS = Registry("task", provided=("model", "run"))
# How an exported model of a family is scored: one evaluator per model family (`vidyn.evaluation`).
EVALUATORS = Registry("evaluator", provided=("model", "meta", "cfg", "dataset"))
