"""Speed of training and scoring, per preset, on this machine's CPU (and GPU when there is one).

    python benchmarks/speed.py [--presets fast paper] [--device cpu] [--batch 32] [--steps 6]

Training speed counts whole iterations of the paper's schedule (a critic step every iteration with the
gradient penalty, a generator step every second one with its three restorations batched), on random
images; scoring counts images per second through the eval-mode detector. Prints one JSON object per
preset and device.
"""

import argparse
import json
import platform
import time

import torch

from medsagan.config import load_config
from medsagan.evaluate.scoring import score_images
from medsagan.losses import SAGANLoss
from medsagan.models import AnomalyDetector, build_critic, build_generator, count_parameters


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_speed(preset: str, device: torch.device, batch: int, steps: int) -> float:
    cfg = load_config(preset=preset)
    generator, critic = build_generator(cfg.model).to(device), build_critic(cfg.model).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), 5e-5, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), 5e-5, betas=(0.5, 0.999))
    loss = SAGANLoss(generator, critic, cfg.loss, torch.Generator(device).manual_seed(0))
    size = cfg.model.image_size
    normal = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    unlabeled = torch.rand(batch, 1, size, size, device=device) * 2 - 1

    def iteration(step: int) -> None:
        batch_ = loss.make_batch(normal, unlabeled)
        d_loss, _ = loss.critic_loss(batch_)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        if step % 2 == 0:
            critic.requires_grad_(False)
            g_loss, _ = loss.generator_loss(batch_)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            critic.requires_grad_(True)

    for step in range(1, 3):
        iteration(step)  # warm-up
    sync(device)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        iteration(step)
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
    device = torch.device(args.device)
    for preset in args.presets:
        cfg = load_config(preset=preset)
        iterations_per_s = training_speed(preset, device, args.batch, args.steps)
        print(
            json.dumps(
                {
                    "preset": preset,
                    "device": torch.cuda.get_device_name(device)
                    if device.type == "cuda"
                    else platform.processor() or "cpu",
                    "threads": torch.get_num_threads(),
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
