"""`model-info`: sizes, shapes and multiply-adds of a configuration's networks."""

import torch
from torch import nn

from ..config import ModelConfig
from ..flops import FlopCounter
from . import build_critic, build_generator, count_parameters
from .discriminator import critic_layers


def multiply_adds(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Multiply-adds of one forward pass (half the FLOPs torch.utils.flop_counter counts), and its output."""
    with FlopCounter() as counter, torch.no_grad():
        output = module(x)
    return counter.total // 2, output


def describe(cfg: ModelConfig) -> dict:
    """Parameter counts, input and output shapes and multiply-adds per image of both networks."""
    generator, critic = build_generator(cfg).eval(), build_critic(cfg).eval()
    x = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size)
    g_macs, restored = multiply_adds(generator, x)
    d_macs, critic_map = multiply_adds(critic, x)
    patches = getattr(generator, "patches", 1)
    return {
        "architecture": cfg.architecture,
        "generator_params": count_parameters(generator),
        "discriminator_params": count_parameters(critic),
        "input_shape": list(x.shape),
        "output_shape": list(restored.shape),
        "critic_output_shape": list(critic_map.shape),
        "patch_grid": f"{patches}x{patches}",
        "patch_size": cfg.image_size // patches,
        "acm": cfg.acm and cfg.architecture == "sagan",
        "arrm": cfg.arrm and cfg.architecture == "sagan",
        "critic_stride2_convs": critic_layers(cfg.image_size, cfg.d_layers),
        "generator_gmacs_per_image": round(g_macs / 1e9, 4),
        "critic_gmacs_per_image": round(d_macs / 1e9, 4),
        "generator_mb_fp32": round(count_parameters(generator) * 4 / 2**20, 1),
    }
