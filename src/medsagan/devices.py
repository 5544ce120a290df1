"""Which torch device a run or a command uses, and how to name the machine a figure was measured on."""

import platform
import subprocess
from pathlib import Path

import torch

from .errors import RunError


def resolve_device(name: str) -> torch.device:
    """The torch device `name` asks for: "auto" is the CUDA GPU when there is one; a missing one is a RunError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"device {name!r} is unknown; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} asked for, but this torch build sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RunError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RunError(f"device {name!r} asked for, but MPS is not available here; use --device cpu")
    return device


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware, so autocast is faster there rather than emulated.

    CUDA GPUs from Ampere on; CPUs with AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake) or AMX (Intel
    Sapphire Rapids and later). Elsewhere bfloat16 convolutions are emulated and slower than float32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run on `device` trains in: "auto" is bfloat16 where the device has it natively."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return precision


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 9B14", "Apple M2"), else the architecture ("x86_64")."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    if platform.system() == "Darwin":
        try:
            found = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found = ""
        if found:
            return found
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_name(device: torch.device) -> str:
    """The processor a figure was measured on, as every timed figure should name it.

    A GPU by its name; a CPU by its model, the vector instructions PyTorch uses on it (float32 speed differs
    2-3x between AVX2 and AVX-512) and whether it has bfloat16 in hardware.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"{cpu_model()} GPU (MPS)"
    vector = torch.backends.cpu.get_cpu_capability()
    bfloat16 = "bfloat16" if native_bfloat16(device) else "no bfloat16"
    return f"{cpu_model()} ({vector}, {bfloat16})"
