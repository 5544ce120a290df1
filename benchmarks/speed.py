"""Speed of training and scoring per preset, against the machine's peak and the official schedule.

    python benchmarks/speed.py [--presets fast paper] [--device cpu] [--batch 32] [--steps 6]
                               [--set KEY=VALUE ...] [--versus KEY=VALUE ...] [--profile] [--markdown]
    torchrun --standalone --nproc-per-node 8 benchmarks/speed.py --presets paper --batch 256   # 8 GPUs

For each preset, in one run:
- peak: a large float32 (or, with bfloat16 training, bfloat16) matmul at the same thread count, in GFLOP/s;
- training: whole iterations of the training loop's own `Trainer.iteration` with the preset's settings (a
  critic step every iteration with the gradient penalty, a generator step every n_critic-th), on random
  images; FLOPs per iteration counted by torch.utils.flop_counter over one n_critic cycle (forward, backward
  and the penalty's double backward, by operator formulas); the share of the peak that reaches;
- reference: the same networks and batch stepped the way the official solver.py does it (the critic's fake
  computed with gradients, three separate generator passes, gradients for the frozen critic), and the ratio;
- scoring: images per second through the eval-mode detector, as `medsagan evaluate` runs it;
- with --profile, the operators that dominate a training iteration (torch.profiler), on stderr.
Prints one JSON object per preset and device (and a README table row with --markdown).
"""

import argparse
import json
import sys
import time

import torch

from medsagan.compute import flops_per_iteration, make_trainer
from medsagan.config import load_config, merge, parse_overrides
from medsagan.devices import machine_name, resolve_precision
from medsagan.distributed import SINGLE, World, local_device, start, world_from_env
from medsagan.evaluate.scoring import score_images
from medsagan.models import AnomalyDetector, build_generator, count_parameters
from medsagan.trainer import Trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work, repeats: int = 1) -> float:
    """Seconds per call of `work` (after the caller's warm-up)."""
    sync(device)
    begin = time.perf_counter()
    for _ in range(repeats):
        work()
    sync(device)
    return (time.perf_counter() - begin) / repeats


def peak_gflops(device: torch.device, dtype: torch.dtype) -> float:
    """GFLOP/s of a large square matmul: the most this device does with these threads and this precision."""
    n = 4096 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    repeats = 50 if device.type == "cuda" else 5
    return 2 * n**3 / timed(device, lambda: a @ b, repeats) / 1e9


def official_iteration(trainer: Trainer, step: int) -> dict[str, torch.Tensor]:
    """One iteration as zzr728/SAGAN solver.py (2fa5bd7) schedules it, with the same networks and batch.

    Returns the critic's and (on a generator step) the generator's loss, as `Trainer.iteration` logs them.
    """
    objective, cycle = trainer.objective, trainer.cfg.train.n_critic
    batch = trainer.next_batch(step)
    with trainer.autocast:
        fake = objective.generator(batch.unlabeled)  # built with a graph, then detached
        loss, _ = objective.critic_loss(batch, fake.detach())
    trainer.opt_d.zero_grad()
    loss.backward()
    trainer.opt_d.step()
    losses = {"D/loss": loss.detach()}
    if step % cycle:
        return losses
    with trainer.autocast:
        restored = tuple(objective.generator(x) for x in (batch.unlabeled, batch.normal, batch.pseudo))
        loss, _ = objective.generator_loss(batch, restored)  # the critic is not frozen: its gradients are spent
    trainer.opt_g.zero_grad()
    loss.backward()
    trainer.opt_g.step()
    return {**losses, "G/loss": loss.detach()}


def compare_speeds(
    trainers: dict[str, Trainer], device: torch.device, steps: int, windows: int, warmup: int = 2
) -> dict[str, float]:
    """Iterations per second of each (name -> trainer; "official" steps as the official solver does).

    The contenders take turns, window after window, and each keeps its best window: a shared or throttled
    machine slows some windows, never speeds one up.
    """
    runs = {
        name: (lambda s, t=t: official_iteration(t, s)) if name == "official" else t.iteration
        for name, t in trainers.items()
    }
    cycle = next(iter(trainers.values())).cfg.train.n_critic
    for run in runs.values():
        for step in range(1, warmup * cycle + 1):
            run(step)  # warm-up: whole n_critic cycles
    counter = iter(range(warmup * cycle + 1, 10**9))
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(windows):
        for name, run in runs.items():
            best[name] = min(best[name], timed(device, lambda run=run: run(next(counter)), steps))
    return {name: 1 / seconds for name, seconds in best.items()}


def profile_table(trainer: Trainer, device: torch.device, steps: int = 4) -> str:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        for step in range(1, steps + 1):
            trainer.iteration(step)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=key, row_limit=15)


def scoring_speed(cfg, device: torch.device, images: int = 256) -> float:
    detector = AnomalyDetector(build_generator(cfg.model)).to(device)
    size = cfg.model.image_size
    batch = torch.randint(0, 256, (images, cfg.model.channels, size, size), dtype=torch.uint8)
    score_images(detector, batch[:64])
    return images / timed(device, lambda: score_images(detector, batch))


def measure(preset: str, args, device: torch.device, world: World = SINGLE) -> dict | None:
    overrides = parse_overrides(args.set)
    overrides.setdefault("train", {})["batch_size"] = args.batch
    cfg = load_config(preset=preset, overrides=overrides)
    trainer = make_trainer(cfg, device, world)
    contenders = {"medsagan": trainer, "official": make_trainer(cfg, device, world)}
    if args.versus:
        variant = load_config(preset=preset, overrides=merge(overrides, parse_overrides(args.versus)))
        contenders["versus"] = make_trainer(variant, device, world)
    speeds = compare_speeds(contenders, device, args.steps, args.windows, args.warmup)
    speed, reference = speeds["medsagan"], speeds["official"]
    if not world.is_main:
        return None
    flops = flops_per_iteration(make_trainer(cfg, device, SINGLE))  # the whole global batch
    bfloat16 = resolve_precision(cfg.train.precision, device) == "bfloat16"
    peak = peak_gflops(device, torch.bfloat16 if bfloat16 else torch.float32) * world.size
    achieved = flops * speed / 1e9
    if args.profile:
        table = profile_table(trainer, device, args.profile_steps)
        print(f"--- {preset}: operators by own time over {args.profile_steps} iterations ---\n{table}", file=sys.stderr)
    return {
        "preset": preset,
        "settings": args.set,
        "device": machine_name(device),
        "threads": torch.get_num_threads(),
        "processes": world.size,
        "batch": args.batch,
        "precision": "bfloat16 autocast" if bfloat16 else "float32",
        "generator_params": count_parameters(build_generator(cfg.model)),
        "peak_gflops": round(peak, 1),
        "gflop_per_iteration": round(flops / 1e9, 2),
        "train_iterations_per_s": round(speed, 3),
        "train_images_per_s": round(speed * args.batch, 1),
        "train_gflops": round(achieved, 1),
        "percent_of_peak": round(100 * achieved / peak, 1),
        "official_schedule_iterations_per_s": round(reference, 3),
        "speedup_over_official_schedule": round(speed / reference, 2),
        "minutes_per_100k_iterations": round(100_000 / speed / 60, 1),
        "score_images_per_s": round(scoring_speed(cfg, device), 1),
        **({"versus": args.versus, "versus_iterations_per_s": round(speeds["versus"], 3)} if args.versus else {}),
    }


def markdown_row(r: dict) -> str:
    cells = [
        r["preset"],
        f"{r['device']}, {r['threads']} threads x {r['processes']}",
        r["precision"],
        r["train_images_per_s"],
        r["train_iterations_per_s"],
        r["score_images_per_s"],
        f"{r['train_gflops']} of {r['peak_gflops']}",
        f"{r['percent_of_peak']} %",
        f"{r['speedup_over_official_schedule']}x",
    ]
    return "| " + " | ".join(map(str, cells)) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["fast", "paper"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed iterations per window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per contender; the best counts")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, as train's")
    parser.add_argument("--warmup", type=int, default=2, help="untimed n_critic cycles before timing")
    parser.add_argument("--profile-steps", type=int, default=4, help="iterations under the profiler")
    parser.add_argument("--versus", nargs="*", default=[], metavar="KEY=VALUE", help="also time these settings")
    parser.add_argument("--profile", action="store_true", help="print the top operators of an iteration")
    parser.add_argument("--markdown", action="store_true", help="also print a README speed-table row")
    args = parser.parse_args()
    world = world_from_env()
    device = local_device(torch.device(args.device), world)
    start(world, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for preset in args.presets:
        result = measure(preset, args, device, world)
        if result is not None:
            print(json.dumps(result), flush=True)
            if args.markdown:
                print(markdown_row(result), flush=True)


if __name__ == "__main__":
    main()
