"""Generator checkpoints of the official code (zzr728/SAGAN model.py at 2fa5bd7) to and from medsagan's.

The official Generator's state dict names its modules layer1, enc_layer1, p_bn1, ... conv (a bare state dict
saved with torch.save). The layers are the same and so are the shapes; only the names differ, and the
official InstanceNorms carry running statistics that it never used (it never left training mode), which
are dropped on import and written as their initial values on export.

| official | medsagan | what |
| --- | --- | --- |
| layer1.{0,1} | stem.{0,1} | 7x7 conv, InstanceNorm |
| enc_layer{1,2,3}.{0,1} | encoder{1,2,3}.{0,1} | 4x4 stride-2 conv, InstanceNorm |
| p_bn{1,2}.0 | fuse{1,2}.0 | ACM: 1x1 conv with bias after the position code |
| bn2.0 | bottleneck.0.0 | ACM at the bottleneck input |
| bn2.{3..}.main.{0,1,3,4} | bottleneck.{1..}.main.{0,1,3,4} | residual blocks |
| gate{1,2,3}.{W_gate,W_x,psi}.0 | gate{1,2,3}.{gating,skip,coefficient}.0 | ARRM attention gates |
| dec_bn{1,2,3}.{main,sc}.{0,1} | block{1,2,3}.{entry,residual}.{0,1} | ARRM decoder blocks |
| dec_layer{1,2,3}.{0,1} | up{1,2,3}.{0,1} | 4x4 stride-2 transposed conv, InstanceNorm |
| up_conv1.{0,1}, up_conv1.{3,4} | lift1.0.{0,1}, lift1.1.{0,1} | fusion branch from decoder level 1 |
| up_conv2.{0,1} | lift2.{0,1} | fusion branch from decoder level 2 |
| bn3.{main,sc}.{0,1} | fusion.{entry,residual}.{0,1} | multi-level fusion |
| conv | to_map | 7x7 conv to the additive map |
"""

import re
from pathlib import Path

import torch
from torch import Tensor

from .config import Config, load_config
from .errors import ConfigError, RunError
from .files import check_output, load_tensors

RUNNING = ("running_mean", "running_var", "num_batches_tracked")
RULES = [  # (official pattern, medsagan replacement), applied to the name without its last part
    (r"layer1\.(\d)$", r"stem.\1"),
    (r"enc_layer(\d)\.(\d)$", r"encoder\1.\2"),
    (r"p_bn(\d)\.0$", r"fuse\1.0"),
    (r"bn2\.0$", "bottleneck.0.0"),
    (r"gate(\d)\.W_gate\.0$", r"gate\1.gating.0"),
    (r"gate(\d)\.W_x\.0$", r"gate\1.skip.0"),
    (r"gate(\d)\.psi\.0$", r"gate\1.coefficient.0"),
    (r"dec_bn(\d)\.main\.(\d)$", r"block\1.entry.\2"),
    (r"dec_bn(\d)\.sc\.(\d)$", r"block\1.residual.\2"),
    (r"dec_layer(\d)\.(\d)$", r"up\1.\2"),
    (r"up_conv1\.([01])$", r"lift1.0.\1"),
    (r"up_conv1\.3$", "lift1.1.0"),
    (r"up_conv1\.4$", "lift1.1.1"),
    (r"up_conv2\.(\d)$", r"lift2.\1"),
    (r"bn3\.main\.(\d)$", r"fusion.entry.\1"),
    (r"bn3\.sc\.(\d)$", r"fusion.residual.\1"),
    (r"conv$", "to_map"),
]
BOTTLENECK_OFFSET = 2  # official bn2 holds the ACM conv, its norm and ReLU (0-2) before the residual blocks


def to_medsagan_name(name: str) -> str | None:
    """The medsagan key of an official key; None for running statistics (dropped) or an unknown key."""
    module, _, leaf = name.rpartition(".")
    if leaf in RUNNING:
        return None
    block = re.fullmatch(r"bn2\.(\d+)\.main\.(\d)", module)
    if block and int(block.group(1)) > BOTTLENECK_OFFSET:
        return f"bottleneck.{int(block.group(1)) - BOTTLENECK_OFFSET}.main.{block.group(2)}.{leaf}"
    for pattern, replacement in RULES:
        if re.fullmatch(pattern, module):
            return f"{re.sub(pattern, replacement, module)}.{leaf}"
    return None


def to_official_name(name: str) -> str:
    """The official key of a medsagan generator key."""
    module, _, leaf = name.rpartition(".")
    block = re.fullmatch(r"bottleneck\.(\d+)\.main\.(\d)", module)
    if block and int(block.group(1)) > 0:
        return f"bn2.{int(block.group(1)) + BOTTLENECK_OFFSET}.main.{block.group(2)}.{leaf}"
    inverse = {
        r"stem\.(\d)$": r"layer1.\1",
        r"encoder(\d)\.(\d)$": r"enc_layer\1.\2",
        r"fuse(\d)\.0$": r"p_bn\1.0",
        r"bottleneck\.0\.0$": "bn2.0",
        r"gate(\d)\.gating\.0$": r"gate\1.W_gate.0",
        r"gate(\d)\.skip\.0$": r"gate\1.W_x.0",
        r"gate(\d)\.coefficient\.0$": r"gate\1.psi.0",
        r"block(\d)\.entry\.(\d)$": r"dec_bn\1.main.\2",
        r"block(\d)\.residual\.(\d)$": r"dec_bn\1.sc.\2",
        r"up(\d)\.(\d)$": r"dec_layer\1.\2",
        r"lift1\.0\.(\d)$": r"up_conv1.\1",
        r"lift1\.1\.0$": "up_conv1.3",
        r"lift1\.1\.1$": "up_conv1.4",
        r"lift2\.(\d)$": r"up_conv2.\1",
        r"fusion\.entry\.(\d)$": r"bn3.main.\1",
        r"fusion\.residual\.(\d)$": r"bn3.sc.\1",
        r"to_map$": "conv",
    }
    for pattern, replacement in inverse.items():
        if re.fullmatch(pattern, module):
            return f"{re.sub(pattern, replacement, module)}.{leaf}"
    raise RunError(f"{name} has no counterpart in the official generator's checkpoint layout")


def read_official(path: str | Path) -> dict[str, Tensor]:
    """An official generator state dict from a checkpoint file (bare, or under "state_dict"/"G")."""
    state = load_tensors(path, "generator checkpoint")
    if isinstance(state, dict) and not any(isinstance(v, Tensor) for v in state.values()):
        state = state.get("state_dict") or state.get("G") or state
    if not isinstance(state, dict) or not state:
        raise RunError(f"{path}: not a generator state dict (a mapping of layer names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}


def official_config(state: dict[str, Tensor], image_size: int = 64, source: str = "checkpoint") -> Config:
    """The paper preset with the widths, depth, channels and patch grid the official weights have."""
    first = state.get("layer1.0.weight")
    fuse = state.get("p_bn1.0.weight")
    if first is None or fuse is None:
        raise RunError(f"{source}: not an official SAGAN generator: layer1.0.weight and p_bn1.0.weight are missing")
    if first.dim() != 4 or fuse.dim() != 4:
        raise RunError(f"{source}: layer1.0.weight and p_bn1.0.weight must be convolution weights (4 dimensions)")
    conv_dim, channels = int(first.shape[0]), int(first.shape[1])
    # The fusion layer reads two feature maps of conv_dim channels and 1 + log2(N^2) position-code bits.
    bits = int(fuse.shape[1]) - 2 * conv_dim
    patches = round(2 ** ((bits - 1) / 2)) if 1 <= bits <= 17 else 0
    if patches < 1 or patches**2 != 2 ** (bits - 1):
        raise RunError(
            f"{source}: p_bn1.0.weight has {int(fuse.shape[1])} input channels, which fits no patch grid for "
            f"layer1.0.weight's {conv_dim} channels (2 x {conv_dim} plus 1 + log2(N x N) code bits); the file is "
            "not an official SAGAN generator or was altered"
        )
    blocks = len({k.split(".")[1] for k in state if re.match(r"bn2\.\d+\.main\.0\.weight$", k)})
    model = {"conv_dim": conv_dim, "channels": channels, "residual_blocks": blocks, "patches": patches}
    try:
        return load_config(overrides={"model": {**model, "image_size": image_size}})
    except ConfigError as err:
        raise RunError(f"{source}: its weights describe a generator medsagan cannot build ({err})") from None


def import_state(state: dict[str, Tensor], expected: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Official weights renamed to medsagan's, checked key by key and shape by shape against `expected`."""
    renamed: dict[str, Tensor] = {}
    for name, value in state.items():
        ours = to_medsagan_name(name)
        if ours is None:
            if name.rpartition(".")[2] in RUNNING:
                continue
            raise RunError(f"{source}: unexpected key {name}; not the official SAGAN generator's architecture")
        if ours not in expected:
            raise RunError(f"{source}: key {name} (medsagan {ours}) does not exist in a generator of this shape")
        if tuple(value.shape) != tuple(expected[ours].shape):
            raise RunError(
                f"{source}: {name} has shape {list(value.shape)}, the generator needs {list(expected[ours].shape)}"
            )
        renamed[ours] = value.detach().clone().float()
    missing = [k for k in expected if k not in renamed]
    if missing:
        raise RunError(f"{source}: missing key {to_official_name(missing[0])} ({len(missing)} missing in all)")
    return renamed


def export_state(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """A medsagan generator's weights under the official names.

    Each affine InstanceNorm gets fresh running statistics, as an official Generator holds them.
    """
    state: dict[str, Tensor] = {}
    for name, value in weights.items():
        official = to_official_name(name)
        state[official] = value.detach().clone()
        module, _, leaf = official.rpartition(".")
        if leaf == "bias" and f"{module}.weight" in state and state[f"{module}.weight"].dim() == 1:
            state[f"{module}.running_mean"] = torch.zeros_like(value)
            state[f"{module}.running_var"] = torch.ones_like(value)
            state[f"{module}.num_batches_tracked"] = torch.tensor(0)
    return state


def import_official(checkpoint: str | Path, out: str | Path, data: str = "", image_size: int = 64) -> Path:
    """Write a medsagan run (config.yaml, best.pt) holding an official generator checkpoint's weights.

    `evaluate`, `predict` and the Python API accept the run; it has no calibration until one is fitted, so
    its scores come without a threshold.
    """
    from .models import build_generator
    from .records import Selection
    from .runs import RunDir

    check_output(out, kind="run")
    state = read_official(checkpoint)
    cfg = official_config(state, image_size, str(checkpoint)).replace(data={"path": data}).with_absolute_paths()
    expected = build_generator(cfg.model).state_dict()
    weights = import_state(state, expected, str(checkpoint))
    run = RunDir(out)
    if run.path.exists() and any(p.name != ".medsagan.lock" for p in run.path.iterdir()):
        raise RunError(f"{run}: already exists and is not empty; choose a new --out for the imported run")
    with run.lock():
        cfg.save(run.config)
        description = f"imported from the official checkpoint {Path(checkpoint).resolve()}"
        run.save_best(weights, Selection(0, None, None, description))
    return run.path
