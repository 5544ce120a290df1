"""SAGAN networks: the generator (ACM + ARRM), the Brainomaly baseline, the critic and the detector."""

from torch import nn

from ..config import ModelConfig
from .baseline import BrainomalyGenerator
from .detector import AnomalyDetector, Restoration, anomaly_map, image_score
from .discriminator import Critic
from .ensemble import Ensemble
from .generator import SAGANGenerator, check_geometry
from .patches import code_bits, merge_patches, position_codes, split_patches


def build_generator(cfg: ModelConfig) -> nn.Module:
    """The generator a model config describes: SAGAN's (ACM + ARRM), Brainomaly's baseline, or an Ensemble."""
    if cfg.ensemble > 1:
        return Ensemble([_single_generator(cfg) for _ in range(cfg.ensemble)])
    return _single_generator(cfg)


def _single_generator(cfg: ModelConfig) -> nn.Module:
    if cfg.architecture == "baseline":
        return BrainomalyGenerator(
            cfg.image_size, cfg.channels, cfg.conv_dim, cfg.residual_blocks, cfg.upsample, cfg.residual
        )
    return SAGANGenerator(
        cfg.image_size,
        cfg.channels,
        cfg.patches,
        cfg.conv_dim,
        cfg.residual_blocks,
        cfg.acm,
        cfg.arrm,
        cfg.mask_keep,
        cfg.upsample,
        cfg.residual,
    )


def build_detector(cfg: ModelConfig, generator: nn.Module) -> AnomalyDetector:
    """The detector a model config describes around `generator` (its map blur, model.map_sigma)."""
    return AnomalyDetector(generator, cfg.map_sigma, cfg.image_size)


def build_critic(cfg: ModelConfig) -> Critic:
    """The WGAN-GP critic a model config describes."""
    return Critic(cfg.image_size, cfg.channels, cfg.d_conv_dim, cfg.d_layers, cfg.d_slope)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "AnomalyDetector",
    "BrainomalyGenerator",
    "Critic",
    "Ensemble",
    "Restoration",
    "SAGANGenerator",
    "anomaly_map",
    "build_critic",
    "build_detector",
    "build_generator",
    "check_geometry",
    "code_bits",
    "count_parameters",
    "image_score",
    "merge_patches",
    "position_codes",
    "split_patches",
]
