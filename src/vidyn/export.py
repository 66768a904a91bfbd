"""Building, exporting and loading models.

An exported model is a folder with `model.safetensors` (tensors only) and `model.json` (builder name
and arguments, the resolved run config, metrics, vidyn version). Loading rebuilds the model from the
registry and reads the tensors: nothing is ever unpickled, so a model file from a stranger cannot run
code. Lightning `.ckpt` files are only for resuming one's own runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import nn

import vidyn
import vidyn.models  # noqa: F401  (registers the builders)
from vidyn.errors import VidynError
from vidyn.fileio import atomic_path, atomic_write_json
from vidyn.registry import MODELS

WEIGHTS = "model.safetensors"
META = "model.json"


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; remembers its name and arguments so it can be exported."""
    model = MODELS.build(name, **kwargs)
    model.vidyn_spec = {"name": name, "args": dict(kwargs), "family": MODELS.get(name).family}
    return model


def list_models(family: str | None = None) -> list[str]:
    return MODELS.names(family)


def model_spec(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "vidyn_spec", None)
    if spec is None:
        raise VidynError("this model was not built with vidyn.build_model, so it cannot be exported")
    return spec


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def export_model(
    model: nn.Module,
    out_dir: str | Path,
    *,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model.safetensors` + `model.json` into out_dir, each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = model_spec(model)
    meta = {
        "name": spec["name"],
        "family": spec["family"],
        "args": spec["args"],
        "config": config or {},
        "metrics": metrics or {},
        "vidyn_version": vidyn.__version__,
        **(extra or {}),
    }
    with atomic_path(out / WEIGHTS) as tmp:
        # save_model (not save_file) de-duplicates tied tensors instead of refusing them.
        safetensors.torch.save_model(model, str(tmp), metadata={"name": spec["name"]})
    atomic_write_json(out / META, _jsonable(meta))
    return out


def resolve_model_dir(path: str | Path) -> Path:
    """Accept an exported model folder, a run folder (with `export/`), or the model.json itself."""
    p = Path(path)
    if p.is_file() and p.name in (META, WEIGHTS):
        p = p.parent
    for candidate in (p, p / "export"):
        if (candidate / META).is_file() and (candidate / WEIGHTS).is_file():
            return candidate
    if not p.exists():
        raise VidynError(
            f"model path {str(p)!r} does not exist; pass an exported model folder or a run folder"
        )
    raise VidynError(
        f"{str(p)!r} holds no exported model ({META} + {WEIGHTS}); pass the folder `vidyn train` or "
        "`vidyn demo` wrote"
    )


def read_model_meta(path: str | Path) -> dict[str, Any]:
    folder = resolve_model_dir(path)
    try:
        return json.loads((folder / META).read_text())
    except json.JSONDecodeError as exc:
        raise VidynError(f"{str(folder / META)!r} is not valid JSON: {exc}") from None


def load_model(path: str | Path, *, map_location: str = "cpu") -> nn.Module:
    """Rebuild an exported model from its folder (or a run folder); never unpickles."""
    folder = resolve_model_dir(path)
    meta = read_model_meta(folder)
    args = dict(meta.get("args", {}))
    if args.get("pretrained"):
        # The exported weights already hold the fine-tuned backbone; the original file may not exist here.
        args["pretrained"] = None
    model = build_model(meta["name"], **args)
    try:
        missing, unexpected = safetensors.torch.load_model(
            model, str(folder / WEIGHTS), strict=True, device=map_location
        )
    except (RuntimeError, safetensors.SafetensorError) as exc:
        msg = str(exc).splitlines()[0]
        raise VidynError(f"weights in {str(folder)!r} do not fit model {meta['name']!r}: {msg}") from None
    model.eval()
    model.vidyn_meta = meta
    return model
