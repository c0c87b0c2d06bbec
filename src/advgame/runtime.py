"""Device choice, seeding and deterministic compute."""
from __future__ import annotations

import os
import platform
import re
import random
import sys

import numpy as np
import torch

from advgame import UserError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"run.device: '{name}' asked for but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def seed_all(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def setup_torch(threads: int = 2, deterministic: bool = True) -> None:
    """Same params on the same machine give the same bits.

    A fixed thread count, because how a reduction is split over threads can change its rounding;
    deterministic kernels where torch has them (warn_only: an op without one, CUDA only in this
    project, warns instead of failing the stage); no cuDNN autotuning, which picks kernels by
    timing. Across machines, kernels also depend on the CPU's instruction set: pin it with the
    environment variables in README ("Determinism"), set before Python starts.
    """
    # cuBLAS reads this when its first handle is made; deterministic GEMMs on CUDA >= 10.2 need it
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if threads:
        torch.set_num_threads(threads)
    switch = getattr(torch._C, "_set_deterministic_algorithms", None)
    if switch is None or "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    else:  # the same switch without importing inductor's config for its flag (0.9 s of every
        switch(deterministic, warn_only=True)  # stage's start-up): nothing here compiles with inductor
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic


def compute_env(device: torch.device) -> dict:
    """What the bits of a result depend on besides params and inputs (tags of the run): the
    device, threads, torch, the CPU (model name and the instruction set torch's kernels use) and
    the versions of the kernel libraries (MKL, oneDNN) torch was built with."""
    return {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **kernel_libraries(), "deterministic": torch.are_deterministic_algorithms_enabled(),
            **{k.lower(): os.environ[k] for k in PIN_VARS if os.environ.get(k)}}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else the platform's processor string)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def kernel_libraries() -> dict:
    """{"mkl": version, "onednn": version} as torch's build reports them (absent when not built in)."""
    shown, out = torch.__config__.show(), {}
    if m := re.search(r"Math Kernel Library Version ([\d.]+)", shown):
        out["mkl"] = m.group(1)
    if m := re.search(r"(?:MKL-DNN|oneDNN) v(\S+)", shown):
        out["onednn"] = m.group(1)
    return out


# Environment variables that pin the CPU kernels across machines (see README, "Determinism")
PIN_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")
