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
import torch
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


MAX_META_BYTES = 64 * 2**20  # far above any real model.json (config, metrics, class names)
_META_FIELDS = {"name": str, "family": str, "args": dict, "config": dict, "metrics": dict, "io": dict,
                "class_names": list}  # fmt: skip
_JSON_KIND = {str: "string", dict: "object", list: "array"}


def _check_meta(meta: Any, path: Path) -> dict[str, Any]:
    """Refuse a model.json whose fields have the wrong JSON types (a hand-edited or forged file)."""
    if not isinstance(meta, dict):
        raise VidynError(
            f"{str(path)!r} holds a JSON {type(meta).__name__}, not an object; re-export the model"
        )
    if not isinstance(meta.get("name"), str):
        raise VidynError(f"{str(path)!r} names no model (a string 'name'); re-export the model")
    for key, kind in _META_FIELDS.items():
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            got = type(meta[key]).__name__
            raise VidynError(
                f"{str(path)!r}: {key!r} must be a JSON {_JSON_KIND[kind]}, got {got}; re-export it"
            )
    if not all(isinstance(c, str | int) for c in meta.get("class_names") or []):
        raise VidynError(f"{str(path)!r}: 'class_names' must be a list of strings; re-export the model")
    return meta


def read_model_meta(path: str | Path) -> dict[str, Any]:
    """The checked model.json of an exported model (or run) folder."""
    file = resolve_model_dir(path) / META
    if file.stat().st_size > MAX_META_BYTES:
        raise VidynError(f"{str(file)!r} is larger than {MAX_META_BYTES >> 20} MiB: not a vidyn model.json")
    try:
        meta = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise VidynError(f"{str(file)!r} is not valid JSON ({reason}); re-export the model") from None
    return _check_meta(meta, file)


def _check_size(name: str, args: dict[str, Any], weights: Path) -> None:
    """Refuse args that describe a model far larger than its weights file (a forged model.json asking for
    terabytes), by building it first on the meta device, where no memory is allocated."""
    try:
        with torch.device("meta"):
            shapes = MODELS.build(name, **args)
    except VidynError:
        raise
    except Exception:  # a builder the meta device cannot run: the real build decides
        return
    need = sum(p.numel() * p.element_size() for p in shapes.parameters())
    have = weights.stat().st_size
    if need > 1.5 * have + 2**20:
        raise VidynError(
            f"{str(weights.parent / META)!r} describes a {name!r} with {need / 2**20:.0f} MiB of parameters "
            f"but {WEIGHTS} holds {have / 2**20:.1f} MiB: they do not belong together; re-export the model"
        )


def _build_checked(meta: dict[str, Any], folder: Path) -> nn.Module:
    args = dict(meta.get("args") or {})
    if args.get("pretrained"):
        # The exported weights already hold the fine-tuned backbone; the original file may not exist here
        # (and a model.json is never a reason to open another file).
        args["pretrained"] = None
    _check_size(meta["name"], args, folder / WEIGHTS)
    try:
        return build_model(meta["name"], **args)
    except VidynError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        reason = (str(exc).splitlines() or [""])[0][:160]
        raise VidynError(
            f"{str(folder / META)!r}: its args do not build model {meta['name']!r} ({type(exc).__name__}: "
            f"{reason}); re-export the model"
        ) from None


def load_model(path: str | Path, *, map_location: str = "cpu") -> nn.Module:
    """Rebuild an exported model from its folder (or a run folder); never unpickles, never follows a path
    written in model.json: the only files read are the folder's own model.json and model.safetensors."""
    folder = resolve_model_dir(path)
    meta = read_model_meta(folder)
    model = _build_checked(meta, folder)
    try:
        safetensors.torch.load_model(model, str(folder / WEIGHTS), strict=True, device=map_location)
    except safetensors.SafetensorError as exc:  # a damaged, truncated or forged header
        msg = str(exc).splitlines()[0]
        raise VidynError(
            f"{str(folder / WEIGHTS)!r} is not a valid safetensors file ({msg}); re-export it"
        ) from None
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        msg = "; ".join(lines[1:3] or lines[:1])[:300]  # the first mismatches, not the generic header line
        raise VidynError(f"weights in {str(folder)!r} do not fit model {meta['name']!r}: {msg}") from None
    model.eval()
    model.vidyn_meta = meta
    return model
