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
