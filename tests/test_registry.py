import pytest

from vidyn.errors import VidynError
from vidyn.registry import Registry


def make() -> Registry:
    reg = Registry("thing")

    @reg.register("a", family="f")
    def a(x: int, y: float = 1.0) -> tuple:
        """Makes an a."""
        return (x, y)

    return reg


def test_build_checks_arguments() -> None:
    reg = make()
    assert reg.build("a", x=2) == (2, 1.0)
    with pytest.raises(VidynError, match="no argument.*z.*valid arguments: x, y"):
        reg.build("a", x=1, z=3)
    with pytest.raises(VidynError, match="needs argument.*x"):
        reg.build("a")


def test_unknown_name_lists_choices_and_duplicates_refused() -> None:
    reg = make()
    with pytest.raises(VidynError, match="unknown thing 'b'; choose one of: a"):
        reg.build("b")
    with pytest.raises(KeyError):
        reg.register("a", family="f")(lambda: None)
    assert reg.names("f") == ["a"] and reg.names("other") == []
    assert reg.get("a").description == "Makes an a."


def test_variant_overrides_defaults_and_keeps_every_argument() -> None:
    reg = make()
    reg.variant("a_small", of="a", description="A small a.", y=0.5)
    entry = reg.get("a_small")
    assert (entry.base, entry.family, entry.description) == ("a", "f", "A small a.")
    assert reg.build("a_small", x=3) == (3, 0.5)
    assert reg.build("a_small", x=3, y=2.0) == (3, 2.0)  # a variant's default can still be overridden
    assert entry.defaults()["y"] == 0.5
    with pytest.raises(VidynError, match="no argument.*z"):
        reg.build("a_small", x=1, z=3)


def test_variant_refuses_unknown_overrides_bad_bases_and_duplicates() -> None:
    reg = make()
    with pytest.raises(TypeError):
        reg.variant("a_bad", of="a", description="", z=1)
    with pytest.raises(VidynError, match="unknown thing 'nope'"):
        reg.variant("b_small", of="nope", description="")
    with pytest.raises(KeyError):
        reg.variant("a", of="a", description="")
