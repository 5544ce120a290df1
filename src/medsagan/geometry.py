"""The image sizes and patch grids the SAGAN generator can be built for.

Kept apart from models/, so that the configuration refuses an impossible geometry when it is built
without importing the networks.
"""

from .errors import ConfigError

ENCODER_LEVELS = 3
SMALLEST_BOTTLENECK = 2  # InstanceNorm needs more than one pixel per channel


def check_geometry(image_size: int, patches: int) -> None:
    """Refuse an image size / patch grid the encoder cannot halve three times, naming the ones that work."""
    if patches < 1:
        raise ConfigError(f"model.patches must be 1 or more, got {patches}")
    smallest_patch = SMALLEST_BOTTLENECK * 2**ENCODER_LEVELS
    patch = image_size // patches if image_size % patches == 0 else 0
    if patch >= smallest_patch and patch % 2**ENCODER_LEVELS == 0:
        return
    working = []
    for size in (32, 64, 128, 256):
        grids = [n for n in (1, 2, 4) if size % n == 0 and size // n >= smallest_patch]
        working.append(f"{size} px with patches {', '.join(map(str, grids))}")
    raise ConfigError(
        f"model.image_size {image_size} with model.patches {patches} is impossible: each patch must be a "
        f"multiple of {2**ENCODER_LEVELS} px and at least {smallest_patch} px, because the encoder halves it "
        f"{ENCODER_LEVELS} times. Sizes that work: {'; '.join(working)}."
    )
