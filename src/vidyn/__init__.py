"""vidyn: a PyTorch toolkit for learning video dynamics.

Public API: `build_model`, `load_model`, `export_model`, `list_models`; the verbs live in `vidyn.api`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["build_model", "export_model", "list_models", "load_model", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so `import vidyn` stays cheap and `vidyn.export` can import `vidyn.__version__`.
    if name in ("build_model", "load_model", "export_model", "list_models"):
        from vidyn import export

        return getattr(export, name)
    raise AttributeError(f"module 'vidyn' has no attribute {name!r}")
