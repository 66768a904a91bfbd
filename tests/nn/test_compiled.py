"""`compiled_or_eager`: compiled when it works, the eager form (and one warning) when compiling fails,
bad inputs fail as they would eagerly, and the off switch is honoured."""

from __future__ import annotations

import warnings

import pytest
import torch

from vidyn.nn import compiled


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_compile_failure_falls_back_to_eager_and_warns_once(monkeypatch) -> None:
    calls = {"eager": 0}

    def eager(x: torch.Tensor) -> torch.Tensor:
        calls["eager"] += 1
        return x * 2

    def broken_compile(fn):
        def run(*args):
            raise RuntimeError("InductorError: no C++ compiler found\ndetails ...")

        return run

    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    monkeypatch.setitem(compiled._state, "enabled", True)
    fn = compiled.compiled_or_eager(_double, eager)
    x = torch.arange(3.0)
    with pytest.warns(UserWarning, match=r"torch.compile failed \(InductorError: no C\+\+ compiler found\)"):
        assert torch.equal(fn(x), x * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        assert torch.equal(fn(x), x * 2)
    assert calls["eager"] == 2


def test_bad_input_raises_the_eager_error_without_a_compile_warning(monkeypatch) -> None:
    def broken_compile(fn):
        def run(*args):
            raise RuntimeError("backend failed")

        return run

    def eager(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("x must be 2-D")

    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    monkeypatch.setitem(compiled._state, "enabled", True)
    fn = compiled.compiled_or_eager(_double, eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="x must be 2-D"):
            fn(torch.zeros(3))


def test_off_switch_runs_eager(monkeypatch) -> None:
    used = []
    monkeypatch.setitem(compiled._state, "enabled", True)
    fn = compiled.compiled_or_eager(lambda x: used.append("fast") or x, lambda x: used.append("eager") or x)
    compiled.set_compile(False)
    try:
        fn(torch.zeros(1))
    finally:
        compiled.set_compile(True)
    assert used == ["eager"]


def test_a_dispatch_mode_sees_the_eager_ops(monkeypatch) -> None:
    """FlopCounterMode (vidyn compare's FLOP count) must see the eager form, not trigger a compile."""
    from torch.utils.flop_counter import FlopCounterMode

    used = []
    monkeypatch.setitem(compiled._state, "enabled", True)
    fn = compiled.compiled_or_eager(lambda x: used.append("fast") or x, lambda x: used.append("eager") or x)
    with FlopCounterMode(display=False):
        fn(torch.zeros(1))
    assert used == ["eager"]


def test_static_shapes_compile_each_signature_once_then_go_dynamic(monkeypatch) -> None:
    made = []  # (code object, dynamic) of each compile

    def recording_compile(fn, dynamic=None, mode=None):
        made.append((fn.__code__, dynamic))
        return fn

    monkeypatch.setattr(compiled.torch, "compile", recording_compile)
    monkeypatch.setitem(compiled._state, "enabled", True)
    fn = compiled.compiled_or_eager(_double, _double, static_shapes=2)
    a, b, c = torch.zeros(2), torch.zeros(3), torch.zeros(4)
    for x in (a, b, a, b.t(), c, torch.zeros(5), a):
        assert torch.equal(fn(x), x * 2)
    # a and b compiled for their shapes, each with its own code object (its own Dynamo cache); then one
    # compile with Dynamo's default (automatic dynamic shapes) serves every other signature
    assert [dynamic for _, dynamic in made] == [False, False, None]
    assert made[0][0] is not made[1][0] and made[2][0] is _double.__code__
    assert made[0][0] is not _double.__code__
    assert compiled._signature((a, (4, 3)), {}) != compiled._signature((a.view(1, 2), (4, 3)), {})
    assert compiled._signature(([a],), {}) == compiled._signature(([torch.ones(2)],), {})
    assert compiled._signature(({"x": 1},), {}) is None  # unhashable: the dynamic compile
