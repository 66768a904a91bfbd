"""Training-step time of a shipped GAN config at several CPU thread counts, interleaved in one process.

Runs the config through `vidyn.api.train` for `--steps` steps per run (no validation, no sample grids, no
evaluation), once per thread count per repetition, in the order 1, 2, 1, 2, ... so that drift of the
machine falls on every setting alike, and prints the median `training_step` wall time over steps 8 to the
end of each run. Run it with nothing else on the machine: the point is what one run gets from the cores.

    python benchmarks/bench_gan_threads.py [--config generate/ode_gan_shapes_quick] [--threads 1 2]
        [--steps 40] [--reps 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from vidyn.api.training import train
from vidyn.tasks.generation import GanTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="generate/ode_gan_shapes_quick")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()

    times: list[float] = []
    step = GanTask.training_step

    def timed(self: GanTask, batch: dict, batch_idx: int):  # noqa: ANN202
        start = time.perf_counter()
        out = step(self, batch, batch_idx)
        times.append(time.perf_counter() - start)
        return out

    GanTask.training_step = timed  # type: ignore[method-assign]
    results: dict[int, list[float]] = {n: [] for n in args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for n in args.threads:
                times.clear()
                overrides = [
                    f"trainer.max_steps={args.steps}", "trainer.val_check_interval=100000",
                    "trainer.limit_val_batches=0", "task.args.sample_every_n_steps=0",
                    f"trainer.num_threads={n}", "trainer.progress_bar=false",
                ]  # fmt: skip
                train(args.config, overrides, run_dir=Path(tmp) / f"t{n}_{rep}", evaluate_after=False)
                results[n].append(statistics.median(times[8:]))
    print(f"{args.config}: median training_step over steps 8-{args.steps}, s/step per run")
    base = statistics.mean(results[args.threads[0]])
    for n, runs in results.items():
        speedup = base / statistics.mean(runs)
        times = " / ".join(f"{t:.3f}" for t in runs)
        print(f"  {n} thread(s): {times}  ({speedup:.2f}x vs {args.threads[0]})")


if __name__ == "__main__":
    main()
