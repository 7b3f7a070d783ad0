"""What this machine can do for training, and the precision and thread count that follow.

    from model.hardware import choose_precision, choose_threads
    choose_precision(torch.device("cpu"))  # Choice(value="bf16", reason="...AVX512-BF16...")

Every choice carries its reason, which training logs and records in train.json and
`llmforge doctor` prints. The rules:
- CUDA: bf16 where the GPU computes it natively (Ampere and later), else fp16 + GradScaler.
- MPS: fp32 (autocast support there is partial).
- CPU: bf16 autocast only where the CPU has native bf16 (AMX-BF16 or AVX512-BF16) and torch
  uses AVX-512 kernels; fp32 on an x86 CPU without them, where bf16 is emulated (REFERENCE,
  Training: an AVX2-only EPYC runs a bf16 matmul at 0.3 GFLOP/s against 135 in fp32, and bf16
  training ~35x slower). Where the flags do not settle it (another architecture, no
  /proc/cpuinfo, torch forced to older kernels) a short matmul measurement decides, cached per
  machine in the llmforge cache.
- Threads: the physical cores among the CPUs this process may use (affinity and cgroup quota),
  shared among the processes of a torchrun job on this host; OMP_NUM_THREADS wins when set.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.store.fs import atomic_write, cache_base

logger = logging.getLogger(__name__)

# bf16 autocast must beat fp32 at the matmul by this much to pay for its casts and the ops it
# keeps in fp32. Matmul speed-up against training speed-up, 2 threads: AMX Xeon 6.1x -> 1.8x
# (REFERENCE, Training); Zen 4 EPYC with AVX512-BF16 3.7x -> ~1.2x (`tiny`, batch 16, interleaved
# steps, issue 8 notes); AVX2-only EPYC 0.002x -> 0.03x. Training breaks even near 3x.
MIN_BF16_MATMUL_SPEEDUP = 3.0
# A measurement's matmul: (N x N) @ (N x N), small enough that 0.3 GFLOP/s takes ~0.1 s.
PROBE_SIZE = 256


@dataclass(frozen=True)
class Choice:
    """A decision and why, in words a user can check."""

    value: Any
    reason: str


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as torch and the kernel describe it."""

    model: str  # /proc/cpuinfo "model name", or platform.processor()
    arch: str  # platform.machine(): x86_64, aarch64, arm64, ...
    flags: frozenset[str]  # /proc/cpuinfo "flags" (x86) or "Features" (ARM); empty if unknown
    capability: str  # torch.backends.cpu.get_cpu_capability(): AVX512, AVX2, DEFAULT, ...
    amx_bf16: bool  # AMX tiles with bf16 (Sapphire Rapids and later)
    avx512_bf16: bool  # AVX512-BF16 (Cooper Lake, Zen 4 and later)

    def key(self) -> str:
        """What a cached measurement is valid for: this CPU model, its flags, this torch."""
        flags = ",".join(sorted(self.flags))
        return f"{self.model}|{self.arch}|{flags}|{self.capability}|torch {torch.__version__}"


def _proc_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo; empty where there is none (macOS)."""
    fields: dict[str, str] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough: they share flags
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _torch_cpu_flag(name: str) -> bool:
    """torch.cpu._is_*_supported() (cpuinfo, any OS); False where this torch lacks it."""
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe else False
    except RuntimeError:
        return False


def cpu_info() -> CpuInfo:
    fields = _proc_cpuinfo()
    flags = frozenset((fields.get("flags") or fields.get("Features") or "").split())
    return CpuInfo(
        model=fields.get("model name") or platform.processor() or "unknown CPU",
        arch=platform.machine(),
        flags=flags,
        capability=torch.backends.cpu.get_cpu_capability(),
        amx_bf16="amx_bf16" in flags or _torch_cpu_flag("_is_amx_tile_supported"),
        avx512_bf16="avx512_bf16" in flags or _torch_cpu_flag("_is_avx512_bf16_supported"),
    )


def hardware_name(device: torch.device) -> str:
    """What trained, for people (train.json, the model card): the GPU's name, or the CPU's
    model name; with the count where there are several."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple {platform.machine()} (mps)"
    return f"{cpu_info().model} ({os.cpu_count() or 1} logical CPUs)"


def _is_x86(cpu: CpuInfo) -> bool:
    return cpu.arch.lower() in ("x86_64", "amd64", "i386", "i686")


def cpu_precision_rule(cpu: CpuInfo) -> Choice | None:
    """bf16 or fp32 from the CPU's features, or None when they do not settle it."""
    kernels = f"torch {cpu.capability} kernels"
    avx512 = cpu.capability.startswith(("AVX512", "AMX"))  # torch's own kernels use AVX-512
    if cpu.amx_bf16 and avx512:
        return Choice("bf16", f"{cpu.model}: AMX-BF16, native bf16 matmuls ({kernels})")
    if cpu.avx512_bf16 and avx512:
        return Choice("bf16", f"{cpu.model}: AVX512-BF16, native bf16 ({kernels})")
    known = cpu.flags or cpu.capability != "DEFAULT"
    if _is_x86(cpu) and known and not (cpu.amx_bf16 or cpu.avx512_bf16):
        return Choice(
            "fp32",
            f"{cpu.model}: no AMX-BF16 or AVX512-BF16 ({kernels}); bf16 would be emulated,"
            " many times slower than fp32",
        )
    return None  # ARM, RISC-V, unknown flags, or bf16 hardware that torch does not use


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int, budget_s: float) -> float:
    """GFLOP/s of (n x n) @ (n x n) in `dtype`: one warm-up, then repeats for ~budget_s."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    torch.matmul(a, b)  # warm-up: kernel selection, oneDNN/cuBLAS handles
    sync()
    reps, started = 0, time.perf_counter()
    while True:
        torch.matmul(a, b)
        reps += 1
        sync()
        elapsed = time.perf_counter() - started
        if elapsed >= budget_s:
            return 2 * n**3 * reps / elapsed / 1e9


Measure = Callable[[torch.dtype], float]


def _probe(dtype: torch.dtype) -> float:
    return matmul_gflops(dtype, torch.device("cpu"), PROBE_SIZE, budget_s=0.05)


def default_cache_dir() -> Path:
    """The machine's llmforge cache (LLMFORGE_CACHE, else ~/.cache/llmforge), as remote
    storage uses: a measurement belongs to this machine, not to a shared storage root."""
    return cache_base() / "hardware"


def _cache_file(cache_dir: Path, cpu: CpuInfo) -> Path:
    import hashlib

    return cache_dir / f"cpu-{hashlib.sha256(cpu.key().encode()).hexdigest()[:16]}.json"


def _read_cache(path: Path, cpu: CpuInfo) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or torn: measure again
    if not isinstance(entry, dict) or entry.get("key") != cpu.key():
        return None
    return entry


def _write_cache(path: Path, entry: dict[str, Any]) -> None:
    """Atomic (temp + rename); a read-only cache only costs a measurement next time."""
    try:
        atomic_write(path, json.dumps(entry, indent=2) + "\n")
    except OSError as exc:
        logger.warning("cannot cache the precision measurement in %s (%s)", path, exc)


def measured_cpu_precision(
    cpu: CpuInfo, cache_dir: Path | None = None, measure: Measure = _probe
) -> Choice:
    """The faster of bf16 and fp32 by a short matmul measurement, cached per CPU and torch."""
    path = _cache_file(cache_dir or default_cache_dir(), cpu)
    entry = _read_cache(path, cpu)
    cached = entry is not None
    if entry is None:
        entry = {"key": cpu.key(), "fp32_gflops": measure(torch.float32)}
        entry["bf16_gflops"] = measure(torch.bfloat16)
        entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_cache(path, entry)
    fp32, bf16 = float(entry["fp32_gflops"]), float(entry["bf16_gflops"])
    speedup = bf16 / fp32 if fp32 > 0 else 0.0
    value = "bf16" if speedup >= MIN_BF16_MATMUL_SPEEDUP else "fp32"
    source = f"cached in {path}" if cached else "measured"
    return Choice(
        value,
        f"{cpu.model}: CPU flags inconclusive; {source}: bf16 matmul {bf16:.1f} vs fp32"
        f" {fp32:.1f} GFLOP/s ({speedup:.2f}x; bf16 needs >= {MIN_BF16_MATMUL_SPEEDUP}x)",
    )


def cuda_precision(device: torch.device) -> Choice:
    name = torch.cuda.get_device_name(device)
    major, minor = torch.cuda.get_device_capability(device)
    try:  # emulated bf16 on pre-Ampere GPUs counts as "supported" by default
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3
        native = torch.cuda.is_bf16_supported()
    if native:
        return Choice("bf16", f"{name} (sm_{major}{minor}) computes bf16 natively")
    return Choice("fp16", f"{name} (sm_{major}{minor}) has no native bf16: fp16 with GradScaler")


def choose_precision(
    device: torch.device, cache_dir: Path | None = None, measure: Measure = _probe
) -> Choice:
    """The precision `auto` means on this device, and why."""
    if device.type == "cuda":
        return cuda_precision(device)
    if device.type == "cpu":
        cpu = cpu_info()
        return cpu_precision_rule(cpu) or measured_cpu_precision(cpu, cache_dir, measure)
    return Choice("fp32", f"{device.type}: fp32 (bf16/fp16 autocast support there is partial)")


def _int_env(env: Mapping[str, str], name: str) -> int | None:
    try:
        value = int(env.get(name, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def physical_cores(cpus: set[int], sys_cpu: Path = Path("/sys/devices/system/cpu")) -> int:
    """Distinct (package, core) pairs among `cpus`; len(cpus) where the topology is unknown."""
    cores = set()
    for cpu in cpus:
        topology = sys_cpu / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return len(cores) or len(cpus)


def cgroup_cpu_limit(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """CPUs a cgroup v2 quota allows (ceil(quota / period)); None when unlimited or unknown."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None  # "max", no cgroup v2, or not Linux


def choose_threads(env: Mapping[str, str] | None = None) -> Choice:
    """Intra-op threads for training on this host, and why."""
    env = os.environ if env is None else env
    if (omp := _int_env(env, "OMP_NUM_THREADS")) is not None:
        return Choice(omp, f"OMP_NUM_THREADS={omp}")
    try:
        cpus = set(os.sched_getaffinity(0))
        where = f"the {len(cpus)} CPUs this process may use"
    except AttributeError:  # macOS, Windows
        cpus = set(range(os.cpu_count() or 1))
        where = f"the {len(cpus)} CPUs of this machine"
    cores = physical_cores(cpus)
    reason = f"{cores} physical cores among {where}"
    limit = cgroup_cpu_limit()
    if limit is not None and limit < cores:
        cores, reason = limit, f"{reason}, cgroup quota of {limit} CPUs"
    # torchrun sets LOCAL_WORLD_SIZE; mp.spawn-style launches set only WORLD_SIZE.
    procs = _int_env(env, "LOCAL_WORLD_SIZE") or _int_env(env, "WORLD_SIZE") or 1
    if procs > 1:
        reason = f"{reason}, shared by {procs} processes"
    return Choice(max(1, cores // procs), reason)
