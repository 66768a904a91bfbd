"""Two torchrun "nodes" of one CPU process each (gloo, loopback) train what one process trains.

The global batch is the same: 2 ranks x `data.batch_size=2` against 1 process x 4. The first test's
training split is exactly one global batch, so every step of both runs sees the same 4 clips; the store
test trains 2 epochs of 5 steps and checks that each step's two rank batches are the single process's
batch (vidyn's `ResumableDistributedSampler`: rank r takes positions r, r+2, ... of the single-process
order), with each rank's reads logged by a wrapper around the CLI. DDP averages the two ranks' mean-loss
gradients, which is the mean over the 4 clips up to the order of float additions; so weights and the
synchronised val/loss agree to float tolerance, not bit for bit. ConvLSTM tiny has no BatchNorm (per-rank
statistics would differ) and `sampling_stop_fraction` ~0 makes its scheduled-sampling mask all-false, so
neither run draws per-rank random numbers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tiny_configs import tiny_prediction_config

TIMEOUT_S = 300  # the whole test; each process is killed past it (the store test runs 5 on 2 cores)
# float32 gradient sums in a different order (per-rank means, then the all-reduce average) differ in the last
# bits; 4 Adam steps (which divide by sqrt(v), amplifying small-gradient entries) keep that near 1e-8 here.
ATOL, RTOL = 1e-6, 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path) -> Path:
    cfg = tiny_prediction_config()
    cfg["data"]["splits"]["train"]["num_samples"] = 4  # one global batch
    cfg["task"]["args"]["sampling_stop_fraction"] = 0.01  # free-running rollout from step 0: no random mask
    cfg["trainer"] |= {"accelerator": "cpu", "num_threads": 1, "dist_timeout": 60}
    cfg["eval"] |= {"baselines": [], "num_visual_clips": 0}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def torchrun_command(port: int, node_rank: int, config: Path, out: Path, *overrides: str) -> list[str]:
    """The README's multi-node command, both nodes on 127.0.0.1."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--node-rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
        "--rdzv-id", "vidyn-test", "--rdzv-conf", "join_timeout=60", "--monitor-interval", "0.2",
        "-m", "vidyn", "train", "-c", str(config), "--out", str(out), *overrides,
    ]  # fmt: skip


def _start(cmd: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"} | (extra_env or {})
    return subprocess.Popen(
        cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def _wait_listening(port: int, proc: subprocess.Popen, within_s: float = 60) -> None:
    """Until `proc` (a torchrun agent) accepts connections on `port`: it hosts the rendezvous store."""
    deadline = time.monotonic() + within_s
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None and time.monotonic() < deadline, "the rendezvous store never started"
        time.sleep(0.05)


def _wait_all(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    """Wait for every process within TIMEOUT_S; on a failure or the timeout kill them all and show logs."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    codes = [p.returncode for p in procs]
    if any(codes):
        tails = "\n".join(
            f"--- {p.name} (exit {c})\n{p.read_text()[-3000:]}" for p, c in zip(logs, codes, strict=True)
        )
        pytest.fail(f"exit codes {codes} (negative: killed at the {TIMEOUT_S} s bound)\n{tails}")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def _best_val_loss(run: Path) -> float:
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    states = [s for k, s in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    return float(states[0]["best_model_score"])


def test_two_nodes_match_one_process(tmp_path):
    config, port = _config(tmp_path), _free_port()
    outs = [tmp_path / "node0" / "run", tmp_path / "node1" / "run"]  # as if each node had its own disk
    single = tmp_path / "single" / "run"
    logs = [tmp_path / "node0.log", tmp_path / "node1.log", tmp_path / "single.log"]
    cmds = [torchrun_command(port, r, config, outs[r], "--set", "data.batch_size=2") for r in (0, 1)]
    cmds.append([sys.executable, "-m", "vidyn", "train", "-c", str(config), "--out", str(single)])
    start = time.monotonic()
    _wait_all([_start(c, log) for c, log in zip(cmds, logs, strict=True)], logs)
    # Only rank 0 wrote: one node's folder holds the whole run, the other node's was never created.
    written = [o for o in outs if o.parent.exists()]
    assert len(written) == 1, f"both ranks wrote files: {[sorted(p.rglob('*')) for p in outs]}"
    run = written[0]
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]  # no run-2 from a second rank
    for name in ("config.yaml", "model.safetensors", "metrics.json", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["batch_size"] == 2
    ddp, one = _weights(run), _weights(single)
    assert ddp.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(ddp[key], one[key], atol=ATOL, rtol=RTOL, msg=key)
    assert _best_val_loss(run) == pytest.approx(_best_val_loss(single), rel=RTOL)
    diff = max(float((ddp[k] - one[k]).abs().max()) for k in one)
    print(f"two nodes + one process in {time.monotonic() - start:.1f} s; max weight difference {diff:.1e}")


def test_a_dead_rank_stops_the_other_with_one_line(tmp_path):
    """Node 1's machine dies (its torchrun and worker killed -9) mid-training: node 0's rank fails its next
    collective within trainer.dist_timeout and exits with vidyn's one-line error, not a hang or a traceback.
    """
    config, port, timeout = _config(tmp_path), _free_port(), 10
    overrides = ["--set", "data.batch_size=2", "--set", "trainer.max_steps=200"]
    overrides += ["--set", f"trainer.dist_timeout={timeout}"]
    marker, logs = tmp_path / "paused", [tmp_path / "node0.log", tmp_path / "node1.log"]
    fault = {"VIDYN_TEST_FAULT": "step@3", "VIDYN_TEST_FAULT_MARKER": str(marker)}  # node 1 pauses there
    # Node 0 first, hosting the rendezvous store as the --rdzv-endpoint host does on a cluster (on loopback
    # either agent could host it, and killing the host ends the job in torchrun's own rendezvous error).
    procs = [_start(torchrun_command(port, 0, config, tmp_path / "node0", *overrides), logs[0])]
    try:
        _wait_listening(port, procs[0])
        procs.append(
            _start(torchrun_command(port, 1, config, tmp_path / "node1", *overrides), logs[1], fault)
        )
        deadline = time.monotonic() + 90
        while not marker.exists():  # node 1's rank is inside step 3
            assert procs[0].poll() is None and procs[1].poll() is None, "a node exited before the fault"
            assert time.monotonic() < deadline, "training never reached step 3"
            time.sleep(0.1)
        worker = int(marker.read_text().split("pid")[1])  # torchrun starts it in a session of its own
        os.killpg(procs[1].pid, signal.SIGKILL)
        os.kill(worker, signal.SIGKILL)  # the whole machine dies: no orphan left pausing at the fault
        killed = time.monotonic()
        code = procs[0].wait(timeout=timeout + 40)
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    log = logs[0].read_text()
    errors = [line for line in log.splitlines() if line.startswith("vidyn: error:")]
    assert code != 0 and len(errors) == 1 and "another rank stopped answering" in errors[0], log[-3000:]
    assert "Traceback" not in log.split("vidyn: error:")[0], log[-3000:]  # torchrun's own summary follows
    print(f"the surviving rank stopped {waited:.1f} s after the kill (dist_timeout {timeout} s)")


def test_one_machine_two_processes_without_out_write_one_run_folder(tmp_path):
    """`trainer.devices=2` without torchrun: Lightning restarts the command for rank 1, which must train
    in the run folder rank 0 picked (runs/tiny), not pick runs/tiny-2 because rank 0 already wrote there."""
    config, log = _config(tmp_path), tmp_path / "one_machine.log"
    cmd = [sys.executable, "-m", "vidyn", "train", "-c", str(config), "--set", "data.batch_size=2"]
    cmd += ["--set", "trainer.devices=2", "--set", "trainer.strategy=ddp", "--set", f"out_dir={tmp_path}"]
    _wait_all([_start(cmd, log)], [log])
    assert "MEMBER: 2/2" in log.read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["tiny"]
    assert (tmp_path / "tiny" / "model.safetensors").is_file()


FAKE_SRUN = """#!/bin/bash
# srun stand-in: the command once per node of $SLURM_NNODES on this machine, as SLURM would start it.
[ "$1" = --kill-on-bad-exit=1 ] && shift
for node in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$node "$@" & done
status=0; for job in $(jobs -p); do wait "$job" || status=1; done; exit $status
"""


def test_slurm_example_runs_on_cpu_nodes(tmp_path):
    """docs/slurm_example.sh as written, with srun / scontrol stand-ins: two nodes on 127.0.0.1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    config, out, log = _config(tmp_path), tmp_path / "run", tmp_path / "slurm.log"
    env = {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "17", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "localhost",
        "CONFIG": str(config), "OUT": str(out), "GPUS_PER_NODE": "1", "PORT": str(_free_port()),
    }  # fmt: skip
    script = Path(__file__).parents[2] / "docs" / "slurm_example.sh"
    cmd = ["bash", str(script), "--set", "data.batch_size=2"]
    _wait_all([_start(cmd, log, env)], [log])
    assert "MEMBER: 2/2" in log.read_text()
    assert (out / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["bin", "run"]


READS_LOGGER = """
# vidyn's CLI, with every clip a prepared store hands out logged as "<split> <index>" lines to
# $VIDYN_TEST_READS/rank<RANK>.log (rank-single outside torchrun); the test reads what each rank trained on.
import os, sys
from vidyn.cli import main
from vidyn.data.store import StoreDataset

log = os.path.join(os.environ["VIDYN_TEST_READS"], f"rank{os.environ.get('RANK', '-single')}.log")
read = StoreDataset.__getitem__
def logged(self, index):
    with open(log, "a") as f:
        f.write(f"{self.split} {index}\\n")
    return read(self, index)
StoreDataset.__getitem__ = logged
sys.exit(main(sys.argv[1:]))
"""  # fmt: skip


def _store_config(tmp_path: Path) -> tuple[Path, Path]:
    """The tiny run on a prepared store of 29 random clips (23 train, 3 val, 3 test): 5 steps an epoch at a
    global batch of 4 (2 ranks x 2, 23 mod 4 = 3 clips left out each epoch), 2 epochs; and the logger."""
    from vidyn.data.prepare import prepare_store

    gen = torch.Generator().manual_seed(0)
    (tmp_path / "clips").mkdir()
    for k in range(29):
        torch.save(torch.rand(8, 1, 16, 16, generator=gen), tmp_path / "clips" / f"{k:02d}.pt")
    store = tmp_path / "store"
    prepare_store("folder", tmp_path / "clips", store, size=16, frames=8, stride=1, grayscale=True,
                  progress=False, workers=0)  # fmt: skip
    cfg = yaml.safe_load(_config(tmp_path).read_text())
    args = {"store": str(store), "size": 16, "num_frames": 8, "frame_stride": 1, "grayscale": True}
    cfg["data"] = {"name": "folder", "args": args, "batch_size": 4}
    cfg["trainer"] |= {"max_steps": 10, "val_check_interval": 5, "checkpoint_every_n_steps": 2}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "reads_logger.py").write_text(READS_LOGGER)
    return tmp_path / "tiny.yaml", tmp_path / "reads_logger.py"


def _train_reads(folder: Path, rank: str) -> list[int]:
    """The training clips a rank read, in order, up to the run's last validation (after it, the evaluation
    of the exported model reads a training clip too)."""
    lines = (folder / f"rank{rank}.log").read_text().split("\n")
    last_val = max(i for i, line in enumerate(lines) if line.startswith("val "))
    return [int(line.split()[1]) for line in lines[:last_val] if line.startswith("train ")]


def _pause_both_nodes_then_kill(port: int, cmds: list[list[str]], tmp_path: Path, reads: Path) -> None:
    """Both nodes run until their rank is inside step 8 (last.ckpt holds step 6); then both machines die."""
    markers = [tmp_path / f"paused{r}" for r in (0, 1)]
    logs = [tmp_path / f"paused{r}.log" for r in (0, 1)]
    envs = [{"VIDYN_TEST_FAULT": "step@7", "VIDYN_TEST_FAULT_MARKER": str(m), "VIDYN_TEST_READS": str(reads)}
            for m in markers]  # fmt: skip
    procs = [_start(cmds[0], logs[0], envs[0])]
    try:
        _wait_listening(port, procs[0])
        procs.append(_start(cmds[1], logs[1], envs[1]))
        deadline = time.monotonic() + TIMEOUT_S
        while not all(m.exists() for m in markers):
            assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
            assert time.monotonic() < deadline, "training never reached step 8"
            time.sleep(0.1)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        for m in markers:  # the workers, which torchrun starts in sessions of their own
            if m.exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(m.read_text().split("pid")[1]), signal.SIGKILL)


def test_two_nodes_read_a_store_in_disjoint_shares_and_resume_mid_epoch(tmp_path):
    """Two nodes training 2 epochs from one prepared store: in each epoch the ranks read disjoint clips,
    and step k's two rank batches are one process's batch k at batch size 4 (so the weights match it).
    Both nodes killed -9 inside step 8 and relaunched with --resume: each rank reads the rest of its share
    of epoch 2 and the run ends with the uninterrupted run's weights, bit for bit."""
    config, logger = _store_config(tmp_path)
    reads = {name: tmp_path / f"reads-{name}" for name in ("ddp", "single", "killed", "resumed")}
    for folder in reads.values():
        folder.mkdir()

    def nodes(port: int, out: Path, *extra: str) -> list[list[str]]:
        cmds = [torchrun_command(port, r, config, out, "--set", "data.batch_size=2", *extra) for r in (0, 1)]
        return [c[: c.index("-m", c.index("--monitor-interval"))] + [str(logger)] + c[c.index("train") :]
                for c in cmds]  # fmt: skip

    port, killed_port = _free_port(), _free_port()
    ddp_run, killed_run, single_run = (tmp_path / name / "run" for name in ("ddp", "killed", "single"))
    single = [sys.executable, str(logger), "train", "-c", str(config), "--out", str(single_run)]
    logs = [tmp_path / f"{name}.log" for name in ("node0", "node1", "single")]
    envs = [{"VIDYN_TEST_READS": str(reads["ddp"])}] * 2 + [{"VIDYN_TEST_READS": str(reads["single"])}]
    runs = [*nodes(port, ddp_run), single]
    procs = [_start(c, log, env) for c, log, env in zip(runs, logs, envs, strict=True)]
    _pause_both_nodes_then_kill(killed_port, nodes(killed_port, killed_run), tmp_path, reads["killed"])
    _wait_all(procs, logs)

    shares, one = [_train_reads(reads["ddp"], r) for r in "01"], _train_reads(reads["single"], "-single")
    assert [len(s) for s in shares] == [20, 20] and len(one) == 40  # 2 epochs of 5 steps
    for epoch in (0, 1):
        ours = [s[10 * epoch : 10 * epoch + 10] for s in shares]
        assert not set(ours[0]) & set(ours[1]) and len(set(ours[0]) | set(ours[1])) == 20
        for k in range(5):
            step = set(ours[0][2 * k : 2 * k + 2]) | set(ours[1][2 * k : 2 * k + 2])
            assert step == set(one[20 * epoch + 4 * k : 20 * epoch + 4 * k + 4]), (epoch, k)
    assert shares[0][:10] != shares[0][10:]  # another order in the second epoch
    ddp = _weights(ddp_run)
    for key, value in _weights(single_run).items():
        torch.testing.assert_close(ddp[key], value, atol=ATOL, rtol=RTOL, msg=key)

    assert torch.load(killed_run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    resume_port = _free_port()
    resume = [
        c[: c.index("train") + 1] + ["--resume", str(killed_run)] for c in nodes(resume_port, killed_run)
    ]
    logs, env = (
        [tmp_path / "resumed0.log", tmp_path / "resumed1.log"],
        {"VIDYN_TEST_READS": str(reads["resumed"])},
    )
    first = _start(resume[0], logs[0], env)
    _wait_listening(resume_port, first)
    _wait_all([first, _start(resume[1], logs[1], env)], logs)
    for r in "01":  # steps 7-10 (last.ckpt held step 6): the last 4 batches of the rank's share
        assert _train_reads(reads["resumed"], r) == _train_reads(reads["ddp"], r)[12:], r
    resumed = _weights(killed_run)
    assert all(torch.equal(resumed[k], ddp[k]) for k in ddp), "the resumed weights differ"
