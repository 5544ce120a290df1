"""`data check`: what a dataset holds, what the protocol would train on, and whether anything is wrong."""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from ..config import DataConfig
from ..errors import DataError
from .dataset import (
    check_leakage,
    few_validation,
    holdout_count,
    labeled_count,
    labelled_validation,
    unlabeled_counts,
)
from .medad_split import MEDAD_KEYS
from .readers import is_dicom
from .source import POOLS, ArraySource, Source

CHECK_SIZE = 64  # decoding at any size validates a file the same way; 64 px keeps the check quick
INTENSITY_SAMPLE = 200  # images, evenly spaced, whose pixels give the intensity statistics


def _header(source: Source, item: str) -> tuple[str, str]:
    """('WxH', mode) of one image that has already decoded cleanly."""
    if isinstance(source, ArraySource):
        array = source._array(item)
        return f"{array.shape[1]}x{array.shape[0]}", "RGB" if array.ndim == 3 else "L"
    path = source.path_of(item)
    if is_dicom(path):
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return f"{ds.Columns}x{ds.Rows}", f"DICOM {ds.get('PhotometricInterpretation', '?')} {ds.BitsStored}-bit"
    with Image.open(path) as image:
        return f"{image.width}x{image.height}", image.mode


def _examine(source: Source, item: str, skip_bad: bool, keep: bool) -> tuple[str, str, np.ndarray | None] | str:
    """Decode an image exactly as training does (`Source.decode`), then read its header.

    Returns (size, mode, pixels if `keep`), or the error text when `skip_bad` (else the DataError is raised).
    """
    try:
        pixels = source.decode(item, CHECK_SIZE, 3)
    except DataError as err:
        if not skip_bad:
            raise
        return str(err)
    return (*_header(source, item), pixels if keep else None)


def inspect(source: Source, cfg: DataConfig) -> dict:
    """Counts per pool, the protocol's unlabelled set, validation plan, image sizes and modes, leakage."""
    counts = {key: len(source.pools.get(key, [])) for key in POOLS if key in source.pools or key in MEDAD_KEYS}
    try:
        normal, abnormal, unknown = unlabeled_counts(source.pools, cfg, str(source.root))
        unlabeled = {"normal": normal, "abnormal": abnormal, "unknown": unknown}
    except DataError as err:
        unlabeled = {"error": str(err)}
    if labelled_validation(source.pools, cfg, str(source.root)):
        validation = {"kind": "labelled", "normal": counts["val/0"], "abnormal": counts["val/1"]}
        warning = few_validation(counts["val/0"], counts["val/1"])
        if warning:
            validation["warning"] = warning
    else:
        held = holdout_count(labeled_count(source.pools, cfg, str(source.root)), cfg.val_fraction)
        pooled = sum(unlabeled.get(k, 0) for k in ("normal", "abnormal", "unknown"))
        held_u = holdout_count(pooled, cfg.val_unlabeled_fraction) if held and pooled > 1 else 0
        kind = ("aucp_heldout" if held_u else "aucp") if held and pooled else "none"
        validation = {"kind": kind, "held_out_normals": held, "held_out_unlabeled": held_u}

    items = [item for key in POOLS for item in source.pools.get(key, [])]
    with ThreadPoolExecutor(8) as pool:
        sampled = set(np.linspace(0, len(items) - 1, min(INTENSITY_SAMPLE, len(items))).astype(int).tolist())
        examined = list(
            pool.map(lambda job: _examine(source, job[1], cfg.skip_bad, job[0] in sampled), enumerate(items))
        )
    bad = [h for h in examined if isinstance(h, str)]
    good = [h for h in examined if isinstance(h, tuple)]
    sizes, modes = Counter(size for size, _, _ in good), Counter(mode for _, mode, _ in good)

    digests = lambda keys: {source.digest(item): item for key in keys for item in source.pools.get(key, [])}  # noqa: E731
    check_leakage(digests(("test/0", "test/1")), digests(k for k in POOLS if not k.startswith("test")), "test")
    return {
        "source": source.kind,
        "path": str(source.root),
        "description": source.describe(),
        "counts": counts,
        "unlabeled_set": unlabeled,
        "protocol": {
            "anomaly_ratio": cfg.anomaly_ratio,
            "unlabeled_size": cfg.unlabeled_size,
            "draw": cfg.unlabeled_draw,
        },
        "validation": validation,
        "image_sizes": dict(sizes.most_common()),
        "image_modes": dict(modes.most_common()),
        "intensity": intensity(
            [pixels for _, _, pixels in good if pixels is not None], any(mode.startswith("RGB") for mode in modes)
        ),
        "unreadable": bad,
    }


def intensity(decoded: list[np.ndarray], colour: bool) -> dict:
    """Mean and standard deviation of each channel's [0, 1] intensities over the sampled images."""
    values = [pixels.reshape(3, -1) / 255.0 for pixels in decoded]
    pixels = np.concatenate(values, axis=1) if values else np.zeros((3, 0))
    channels = ("red", "green", "blue") if colour else ("grey",)
    stats = {"sampled_images": len(values)}
    for i, name in enumerate(channels):
        row = pixels[i] if len(channels) == 3 else pixels.mean(0)
        stats[name] = {
            "mean": round(float(row.mean()), 4) if row.size else None,
            "std": round(float(row.std()), 4) if row.size else None,
        }
    return stats


def format_report(report: dict) -> str:
    """The report of `inspect` as the text `data check` prints."""
    lines = [f"dataset   {report['description']}", "", f"{'pool':<22}{'images':>8}"]
    lines += [f"{key:<22}{count:>8}" for key, count in report["counts"].items()]
    unlabeled, protocol = report["unlabeled_set"], report["protocol"]
    lines.append("")
    if "error" in unlabeled:
        lines.append(f"unlabelled set: cannot be built: {unlabeled['error']}")
    elif unlabeled["unknown"]:
        lines.append(f"unlabelled set: {unlabeled['unknown']} images of unknown label (all of unlabeled/)")
    else:
        lines.append(
            f"unlabelled set: {unlabeled['normal']} normal + {unlabeled['abnormal']} abnormal "
            f"(anomaly ratio {protocol['anomaly_ratio']}, {protocol['draw']} of each pool)"
        )
    validation = report["validation"]
    if validation["kind"] == "labelled":
        lines.append(f"validation: labelled split, {validation['normal']} normal + {validation['abnormal']} abnormal")
        if "warning" in validation:
            lines.append(f"  warning: {validation['warning']}")
    elif validation["kind"] == "aucp":
        lines.append(
            f"validation: {validation['held_out_normals']} held-out labelled normals against the "
            "unlabelled set (AUCp, label-free)"
        )
    elif validation["kind"] == "aucp_heldout":
        lines.append(
            f"validation: {validation['held_out_normals']} held-out labelled normals against "
            f"{validation['held_out_unlabeled']} held-out unlabelled images (AUCp, label-free, never trained on)"
        )
    else:
        lines.append("validation: none (the last iteration is kept)")
    sizes = ", ".join(f"{size} ({n})" for size, n in report["image_sizes"].items())
    modes = ", ".join(f"{mode} ({n})" for mode, n in report["image_modes"].items())
    lines += [f"image sizes: {sizes}", f"image modes: {modes}"]
    stats = report["intensity"]
    channels = ", ".join(
        f"{name} mean {value['mean']:.3f} sd {value['std']:.3f}"
        for name, value in stats.items()
        if isinstance(value, dict) and value["mean"] is not None
    )
    lines.append(f"intensity in [0, 1] ({stats['sampled_images']} images sampled): {channels}")
    if report["unreadable"]:
        lines.append(f"unreadable, skipped: {len(report['unreadable'])}; first: {report['unreadable'][0]}")
    return "\n".join(lines)
