"""Training on two processes with torchrun (gloo on the CPU), started the way users start it."""

import os
import subprocess
import sys

import pytest
import torch

from helpers import tiny_args
from medsagan.files import load_tensors

pytestmark = pytest.mark.slow  # each test trains or exports a model

# The random mask draws from each rank's own stream; without it two ranks compute exactly what one does.
ARGS = tiny_args(train={"batch_size": 8, "validate_every": 2, "checkpoint_every": 2}, model={"mask_keep": 1.0})
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def medsagan(*args, processes=1):
    """`medsagan ARGS` as one process, or under torchrun as `processes` ranks."""
    launcher = [sys.executable, "-m", "medsagan"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        launcher += ["-m", "medsagan"]
    result = subprocess.run([*launcher, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def train(out, iterations, processes=1):
    return medsagan(
        "train",
        "--data",
        "synthetic",
        "--iterations",
        iterations,
        "--out",
        out,
        "--no-progress",
        *ARGS,
        processes=processes,
    )


def resume(out, iterations, processes=1):
    return medsagan("train", "--resume", out, "--iterations", iterations, "--no-progress", processes=processes)


def assert_same_weights(a, b, iteration):
    """Same critic to float tolerance; the generator within what Adam can make of rounding noise.

    The generator's conv biases in front of InstanceNorm have an exactly zero gradient, which float
    arithmetic leaves as noise of either sign; Adam's first steps move by lr x sign(gradient), so those
    entries may differ by up to 2 lr per generator step whatever the summation order (one process with
    two threads differs from one with one thread the same way). test_gradients_of_two_ranks_equal_one_process
    checks the gradients themselves to float tolerance. The critic's gradients are never exactly zero, but
    Adam divides each by its own running size, so the rounding noise of a different summation order (two
    ranks' averaged halves against one batch) grows with every step: on a Zen 5 CPU the two runs end 0.15 lr
    apart after 12 critic steps (on the earlier CPU within 1e-5 relative). Data or sampler bugs move many lr.
    """
    first = load_tensors(a / "checkpoints" / f"state-{iteration:08d}.pt")
    second = load_tensors(b / "checkpoints" / f"state-{iteration:08d}.pt")
    for key, value in first["critic"].items():
        torch.testing.assert_close(second["critic"][key], value, rtol=0, atol=5e-5, msg=f"critic.{key}")
    bound = 2 * 5e-5 * (iteration // 2)  # 2 lr per generator step (n_critic 2, lr 5e-5)
    for key, value in first["generator"].items():
        torch.testing.assert_close(second["generator"][key], value, rtol=0, atol=bound, msg=f"generator.{key}")
    assert torch.equal(first["sampler"]["normal_order"], second["sampler"]["normal_order"])
    assert first["sampler"]["position"] == second["sampler"]["position"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    train(out, 6)
    return out


def test_two_ranks_take_the_same_steps_as_one_process_and_only_rank_0_writes(one_process, tmp_path):
    result = train(tmp_path / "run", 6, processes=2)
    assert_same_weights(one_process, tmp_path / "run", 6)  # the critic's gradient penalty included
    assert result.stdout.count("run finished") == 1  # one rank reports
    written = sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*"))
    expected = sorted(p.relative_to(one_process).as_posix() for p in one_process.rglob("*"))
    assert written == expected  # the same files as one process, no rank's extras
    assert sorted(p.name for p in tmp_path.iterdir()) == [".medsagan-cache", "run"]  # the decoded-image cache
    assert len(list((tmp_path / ".medsagan-cache").iterdir())) == len(
        list((one_process.parent / ".medsagan-cache").iterdir())
    )


def test_a_two_rank_run_resumes_on_one_process_and_back(one_process, tmp_path):
    train(tmp_path / "a", 4, processes=2)
    resume(tmp_path / "a", 6)  # two ranks, then one
    assert_same_weights(one_process, tmp_path / "a", 6)
    train(tmp_path / "b", 4)
    resume(tmp_path / "b", 6, processes=2)  # one, then two
    assert_same_weights(one_process, tmp_path / "b", 6)


def test_a_batch_that_does_not_divide_is_refused(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "medsagan"]
    args = ["train", "--data", "synthetic", "--out", tmp_path / "run", *ARGS, "train.batch_size=7"]
    result = subprocess.run([*launcher, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "train.batch_size 7 does not divide among 2 processes" in result.stderr
    assert not (tmp_path / "run").exists()


def test_medsagans_own_launcher_trains_as_torchrun_and_refuses_in_one_line(tmp_path):
    own = [sys.executable, "-m", "medsagan", "train", "--nproc-per-node", "2", "--data", "synthetic", "--no-progress"]
    refused = subprocess.run(
        [*own, "--out", str(tmp_path / "refused"), *ARGS, "train.batch_size=7"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: train.batch_size 7 does not divide among 2 processes; make it a multiple of 2 (it is the global "
        "batch, split across the processes)"
    ]
    assert not (tmp_path / "refused").exists()

    args = ["--iterations", "4", "--out", str(tmp_path / "own"), *ARGS]
    subprocess.run([*own, *args], env=ENV, check=True, capture_output=True, timeout=300)
    train(tmp_path / "one", 4)
    assert_same_weights(tmp_path / "one", tmp_path / "own", 4)


def _gradient_step(rank, world_size, init_file, out_file):
    """Two iterations of the real Trainer with plain SGD at lr 1, so the weights move by exactly the gradients."""
    from helpers import tiny_config
    from medsagan.distributed import World
    from medsagan.trainer import Trainer

    torch.set_num_threads(1)
    if world_size > 1:
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
        )
    cfg = tiny_config(train={"batch_size": 8, "lr_g": 1.0, "lr_d": 1.0}, model={"mask_keep": 1.0})
    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 32, 32), dtype=torch.uint8)
    torch.manual_seed(cfg.train.seed)
    trainer = Trainer(cfg, torch.device("cpu"), images[:12], images[12:], World(rank, world_size, rank))
    trainer.opt_d = torch.optim.SGD(trainer.critic.parameters(), lr=1.0)
    trainer.opt_g = torch.optim.SGD(trainer.generator.parameters(), lr=1.0)
    for step in (1, 2):
        trainer.iteration(step)
    if rank == 0:
        torch.save({"generator": trainer.generator.state_dict(), "critic": trainer.critic.state_dict()}, out_file)
    if world_size > 1:
        torch.distributed.barrier()  # rank 1 leaving while rank 0 still saves aborts gloo now and then
        # Tearing gloo down still aborted a worker now and then (SIGABRT in a CI run); everything this worker
        # had to do is on disk, so it leaves at once, and the kernel closes its connections.
        os._exit(0)


def test_gradients_of_two_ranks_equal_one_process(tmp_path):
    import torch.multiprocessing as mp

    _gradient_step(0, 1, None, tmp_path / "one.pt")
    mp.spawn(_gradient_step, args=(2, tmp_path / "init", tmp_path / "two.pt"), nprocs=2, join=True)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for network in ("critic", "generator"):
        for key, value in one[network].items():
            error = (two[network][key] - value).abs().max() / value.abs().max().clamp_min(1e-12)
            assert error < 1e-5, f"{network}.{key}: relative difference {error:.2e}"  # float32 sums, reordered


def test_when_rank_0_cannot_start_every_rank_stops_with_its_reason(one_process):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "medsagan"]
    args = ["train", "--data", "synthetic", "--out", one_process, "--no-progress", *ARGS]  # already holds a run
    result = subprocess.run([*launcher, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "already holds a run" in result.stderr
    assert "rank 1: rank 0 could not open the run" in result.stderr
