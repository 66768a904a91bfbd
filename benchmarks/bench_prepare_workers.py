"""`vidyn prepare --workers N`: clips/s at 0, 1 and 2 worker processes, and the stores they write compared.

Generates a folder tree of 320x240 MPEG-4 AVIs (UCF101's codec and size; `bench_store.make_tree`), then
prepares the same store (64 px, 16 frames at stride 2, `--clips-per-video` windows per video) into a fresh
folder once per worker count, through `vidyn prepare` as a user runs it (in a fresh process each time,
so each count pays for spawning its workers). Prints per count: wall time, clips/s, the speed-up over the
first count, and CPU seconds (the command's own process, and its worker processes); then checks that
every store holds the same files, byte for byte (SHA-1 of each).

    flock /tmp/bench.lock python benchmarks/bench_prepare_workers.py [--videos 240] [--workers 0 1 2]

`--profile` also runs the 2-worker case in this process under cProfile and prints where the parent
(the process that collects results and writes shards) spends its time. On a machine other jobs share,
wall figures move with their load: the load average is printed before each run, and "cores busy" (CPU
seconds of the command and its workers over its wall time) shows how much of the machine a run got; CPU
seconds do not depend on the load.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_store import make_tree

SETTINGS = ["--size", "64", "--frames", "16", "--stride", "2"]


RUNNER = """
import resource, sys, time
from vidyn.cli import main
cpu = lambda who: (lambda u: u.ru_utime + u.ru_stime)(resource.getrusage(who))
start, own = time.perf_counter(), cpu(resource.RUSAGE_SELF)
code = main(sys.argv[1:])
wall = time.perf_counter() - start
print("BENCH", wall, cpu(resource.RUSAGE_SELF) - own, cpu(resource.RUSAGE_CHILDREN))
sys.exit(code)
"""  # vidyn's CLI, then its wall time and CPU seconds (its own process, its joined workers); imports excluded


def digests(store: Path) -> dict[str, str]:
    files = sorted(p for p in store.iterdir() if p.name != ".lock")
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


def run_prepare(root: Path, out: Path, workers: int, clips_per_video: int) -> tuple[float, float, float]:
    """`vidyn prepare` in a fresh process: (wall s, CPU s of that process, CPU s of its workers).

    Both are `main()`'s: from the command's start to its end, spawning the workers included, Python's
    start-up and vidyn's imports in the command's process excluded (about 2 s here)."""
    args = ["prepare", "--dataset", "folder", "--root", str(root), "--out", str(out),
            "--workers", str(workers), "--clips-per-video", str(clips_per_video), *SETTINGS]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"prepare failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("BENCH "))
    wall, own, pool = (float(x) for x in line.split()[1:])
    return wall, own, pool


def profile_parent(root: Path, out: Path, clips_per_video: int, top: int = 14) -> None:
    """The 2-worker prepare in this process under cProfile: what the collecting/writing parent does."""
    from vidyn.data.prepare import prepare_store

    profiler = cProfile.Profile()
    profiler.enable()
    prepare_store("folder", root, out, size=64, frames=16, stride=2, clips_per_video=clips_per_video,
                  workers=2, progress=False)  # fmt: skip
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    print("\nparent process, 2 workers, by own time:\n" + text.getvalue().split("\n\n", 2)[-1].rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=240)
    parser.add_argument("--frames", type=int, default=240, help="frames per generated video (25 fps)")
    parser.add_argument("--clips-per-video", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", action="store_true", help="also profile the parent at 2 workers")
    args = parser.parse_args()
    print(f"{args.videos} AVIs 320x240 x {args.frames} frames, {args.clips_per_video} clips each; "
          f"{os.cpu_count()} cores")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="vidyn_bench_prepare_"))
    try:
        root = work / "videos"
        start = time.perf_counter()
        make_tree(root, args.videos, args.frames)
        print(f"generated the tree in {time.perf_counter() - start:.1f} s")
        results, stores = {}, {}
        for workers in args.workers:
            load = os.getloadavg()[0]
            stores[workers] = work / f"store-{workers}"
            results[workers] = run_prepare(root, stores[workers], workers, args.clips_per_video)
            wall, own, pool = results[workers]
            clips = args.videos * args.clips_per_video
            base = results[args.workers[0]][0]
            print(f"--workers {workers}: {clips / wall:5.1f} clips/s ({clips} clips in {wall:5.1f} s, "
                  f"x{base / wall:.2f} vs --workers {args.workers[0]}); CPU s: command {own:4.1f}, workers "
                  f"{pool:4.1f}, {(own + pool) / wall:.2f} cores busy on average; load average before "
                  f"{load:.1f}")  # fmt: skip
        reference = digests(stores[args.workers[0]])
        for workers, store in stores.items():
            assert digests(store) == reference, f"--workers {workers} wrote another store"
        print(f"all {len(stores)} stores identical: {len(reference)} files, SHA-1 of each equal")
        if args.profile:
            profile_parent(root, work / "profiled", args.clips_per_video)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
