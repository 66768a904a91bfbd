"""A separate process that reads the files named on its stdin with `vidyn.data.video_io`, one path a line,
and answers one JSON line each: `{"path", "results": [[call, kind, detail], ...]}` with kind "ok" (frames
decoded), "vidyn" (a VidynError, detail = its message) or "other" (any other exception, detail = its type,
message and last traceback line). The fuzz tests drive it, so a hang or a crash inside a decoder is seen
and bounded by the test (a timeout, a dead process) instead of being suffered by it.

Address space is capped (`VIDYN_FUZZ_MEM_GB`, default 4), so a header that makes a decoder allocate wildly
fails here as a MemoryError rather than swapping the machine.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
import warnings


def _calls(path: str):
    from vidyn.data.video_io import iter_video, load_frames, probe_video, read_video

    yield "probe_video", lambda: probe_video(path)["codec"]
    yield "read_video", lambda: len(read_video(path).times)
    yield "load_frames", lambda: tuple(load_frames(path, size=16, channels=1, max_frames=3)[0].shape)
    yield "iter_video", lambda: sum(1 for _ in iter_video(path, size=(8, 12)))


def check(path: str) -> list[list]:
    from vidyn.errors import VidynError

    results = []
    for name, call in _calls(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # truncated files keep their frames with a warning
                results.append([name, "ok", repr(call())])
        except VidynError as e:
            results.append([name, "vidyn", str(e)])
        except BaseException as e:  # noqa: BLE001  (what the fuzz tests look for)
            where = traceback.format_exception(e)[-2].strip().splitlines()[0] if e.__traceback__ else ""
            results.append([name, "other", f"{type(e).__name__}: {str(e)[:300]} @ {where}"])
    return results


def main() -> None:
    limit = int(float(os.environ.get("VIDYN_FUZZ_MEM_GB", "4")) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    torch.set_num_threads(1)
    check(os.devnull)  # import everything before the first timed read
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        path = line.rstrip("\n")
        print(json.dumps({"path": path, "results": check(path)}), flush=True)


if __name__ == "__main__":
    main()
