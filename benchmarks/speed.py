"""Speed of training and scoring, per preset, on this machine's CPU (and GPU when there is one).

    python benchmarks/speed.py [--presets fast paper] [--device cpu] [--batch 32] [--steps 6]
    torchrun --standalone --nproc-per-node 8 benchmarks/speed.py --presets paper --batch 256   # 8 GPUs

Training speed counts whole iterations of the training loop's own Trainer.iteration with the preset's
settings (a critic step every iteration with the gradient penalty, a generator step every n_critic-th with
its three restorations batched), on random images; scoring counts images per second through the
eval-mode detector. Prints one JSON object per
preset and device.
"""

import argparse
import json
import platform
import time

import torch

from medsagan.config import load_config
from medsagan.distributed import SINGLE, World, local_device, start, world_from_env
from medsagan.evaluate.scoring import score_images
from medsagan.models import AnomalyDetector, build_generator, count_parameters
from medsagan.train import Trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_speed(preset: str, device: torch.device, batch: int, steps: int, world: World = SINGLE) -> float:
    """Iterations per second of the training loop's own Trainer.iteration, with the preset's settings.

    Under torchrun, `batch` is the global batch split across the ranks, as in `medsagan train`.
    """
    cfg = load_config(preset=preset, overrides={"train": {"batch_size": batch}})
    size, channels = cfg.model.image_size, cfg.model.channels
    pool = max(batch, 64)
    images = lambda: torch.randint(0, 256, (pool, channels, size, size), dtype=torch.uint8)  # noqa: E731
    trainer = Trainer(cfg, device, images(), images(), world)
    for step in range(1, 3):
        trainer.iteration(step)  # warm-up
    sync(device)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        trainer.iteration(step)
    sync(device)
    return steps / (time.perf_counter() - start)


def scoring_speed(preset: str, device: torch.device, images: int = 256) -> float:
    cfg = load_config(preset=preset)
    detector = AnomalyDetector(build_generator(cfg.model)).to(device)
    batch = torch.randint(0, 256, (images, 1, cfg.model.image_size, cfg.model.image_size), dtype=torch.uint8)
    score_images(detector, batch[:64])
    sync(device)
    start = time.perf_counter()
    score_images(detector, batch)
    sync(device)
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["fast", "paper"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    world = world_from_env()
    device = local_device(torch.device(args.device), world)
    start(world, device)
    for preset in args.presets:
        cfg = load_config(preset=preset)
        iterations_per_s = training_speed(preset, device, args.batch, args.steps, world)
        if not world.is_main:
            continue
        print(
            json.dumps(
                {
                    "preset": preset,
                    "device": torch.cuda.get_device_name(device)
                    if device.type == "cuda"
                    else platform.processor() or "cpu",
                    "threads": torch.get_num_threads(),
                    "processes": world.size,
                    "batch": args.batch,
                    "generator_params": count_parameters(build_generator(cfg.model)),
                    "train_iterations_per_s": round(iterations_per_s, 3),
                    "train_images_per_s": round(iterations_per_s * args.batch, 1),
                    "seconds_per_100k_iterations": round(100_000 / iterations_per_s),
                    "score_images_per_s": round(scoring_speed(preset, device), 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
