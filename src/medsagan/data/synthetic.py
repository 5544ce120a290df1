"""A seeded synthetic chest-radiograph-like dataset, so that the demo runs with nothing downloaded.

Each image is drawn as a density map: a torso, two dark lung fields, a spine, a heart shadow, ribs,
clavicles and a diaphragm, with per-image variation of anatomy, exposure and noise. Abnormal images add
one to three soft opacities inside the lungs (a consolidation-like brightening), whose masks are known:
the pixels an opacity brightens by at least LESION_LEVEL, so localisation can be measured on them. It is a
toy: a model that scores well on it is not thereby validated on real radiographs.
"""

import numpy as np

LESION_LEVEL = 0.1  # added density (0.1 of the intensity range, about 25 grey levels) that counts as lesion


def _ellipse(u, v, cu, cv, ru, rv, softness=0.08):
    """Soft indicator of an ellipse: 1 inside, 0 outside, a sigmoid edge of width `softness`."""
    distance = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return 1.0 / (1.0 + np.exp((distance - 1.0) / softness))


def _radiograph(rng: np.random.Generator, size: int, abnormal: bool) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 [size, size] image and its bool lesion mask (empty for a normal image)."""
    v, u = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    shift_u, shift_v = rng.normal(0, 0.03, 2)
    u, v = u - shift_u, v - shift_v
    body = _ellipse(u, v, 0, 0.05, 0.86 + rng.normal(0, 0.03), 1.1, 0.04)
    density = 0.05 + 0.4 * body
    lung_w, lung_h, lung_v = 0.27 + rng.normal(0, 0.02), 0.52 + rng.normal(0, 0.03), -0.08 + rng.normal(0, 0.03)
    taper = 1.0 + 0.3 * (v - lung_v) / lung_h  # lungs widen towards the diaphragm
    lungs = np.maximum(
        _ellipse(u / taper, v, -0.37, lung_v, lung_w, lung_h, 0.06),
        _ellipse(u / taper, v, 0.37, lung_v, lung_w, lung_h, 0.06),
    )
    density -= 0.28 * lungs
    density += 0.22 * np.exp(-((u / 0.09) ** 2)) * body  # spine and mediastinum
    heart = _ellipse(u, v, 0.1 + rng.normal(0, 0.02), 0.3, 0.3 + rng.normal(0, 0.02), 0.24, 0.12)
    density += 0.2 * heart
    diaphragm = 1.0 / (1.0 + np.exp(-(v - 0.52 - rng.normal(0, 0.03) - 0.08 * u**2) / 0.04))
    density += 0.25 * diaphragm * body
    phase, spacing = rng.uniform(0, 1), 0.16 + rng.normal(0, 0.006)
    for k in range(-1, 9):
        centre = -0.75 + (k + phase) * spacing + 0.5 * (np.abs(u) - 0.4) ** 2
        density += 0.07 * np.exp(-(((v - centre) / 0.022) ** 2)) * (np.abs(u) > 0.08) * body
    clavicle_v = -0.62 + rng.normal(0, 0.02)
    density += 0.12 * np.exp(-(((v - clavicle_v + 0.15 * np.abs(u)) / 0.03) ** 2)) * (np.abs(u) < 0.6) * body
    lesion = np.zeros_like(density)
    if abnormal:
        for _ in range(rng.integers(1, 4)):
            side = rng.choice([-0.37, 0.37])
            cu, cv = side + rng.normal(0, 0.08), lung_v + rng.uniform(-0.35, 0.35)
            sigma = rng.uniform(0.08, 0.18)
            blob = np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * sigma**2))
            added = rng.uniform(0.25, 0.4) * blob * lungs
            density += added
            lesion += added
    gamma = np.exp(rng.normal(0, 0.1))
    image = np.clip(density, 0, 1) ** gamma * rng.uniform(0.9, 1.1)
    image += rng.normal(0, 0.008, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), lesion >= LESION_LEVEL


def synthetic_data(count: int, size: int = 64, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(images, lesion masks): uint8 and bool [N, size, size] per Med-AD pool; test pools hold count // 3."""
    rng = np.random.default_rng(seed)
    plan = {
        "train/0": (count, False),
        "train/unlabeled/0": (count, False),
        "train/unlabeled/1": (count, True),
        "test/0": (max(count // 3, 2), False),
        "test/1": (max(count // 3, 2), True),
    }
    images, masks = {}, {}
    for pool, (n, abnormal) in plan.items():
        drawn = [_radiograph(rng, size, abnormal) for _ in range(n)]
        images[pool], masks[pool] = np.stack([d[0] for d in drawn]), np.stack([d[1] for d in drawn])
    return images, masks
