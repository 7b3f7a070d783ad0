"""`precision = "auto"` and the thread count follow what the hardware can do (issue 8).

Each machine kind is faked, so a CI machine of one kind cannot hide a wrong choice for another.
"""

import json
from dataclasses import replace

import pytest
import torch

from model import hardware
from model.hardware import Choice, CpuInfo, choose_precision, choose_threads
from model.precision import setup_precision
from model.train import train
from tests.model.conftest import small_cfg

CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = CpuInfo(
    model="Intel(R) Xeon(R) Platinum 8488C",
    arch="x86_64",
    flags=frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
    capability="AVX512",
    amx_bf16=True,
    avx512_bf16=True,
)
ZEN4 = CpuInfo(
    model="AMD EPYC 9R14",
    arch="x86_64",
    flags=frozenset({"avx2", "avx512f", "avx512_bf16"}),
    capability="AVX512",
    amx_bf16=False,
    avx512_bf16=True,
)
AVX2_ONLY = CpuInfo(
    model="AMD EPYC 7R13",
    arch="x86_64",
    flags=frozenset({"avx2", "fma"}),
    capability="AVX2",
    amx_bf16=False,
    avx512_bf16=False,
)
GRAVITON3 = CpuInfo(
    model="unknown CPU",
    arch="aarch64",
    flags=frozenset({"fp", "asimd", "sve", "bf16"}),
    capability="SVE256",
    amx_bf16=False,
    avx512_bf16=False,
)


def no_measurement(dtype):
    raise AssertionError("the CPU flags settle it: nothing should be measured")


def fake_measure(fp32: float, bf16: float, calls: list | None = None):
    def measure(dtype):
        if calls is not None:
            calls.append(dtype)
        return {torch.float32: fp32, torch.bfloat16: bf16}[dtype]

    return measure


@pytest.fixture
def on_cpu(monkeypatch, tmp_path):
    """Pretend to run on a given CPU; measurements are cached in tmp_path."""
    monkeypatch.setenv("LLMFORGE_CACHE", str(tmp_path / "cache"))

    def use(cpu: CpuInfo) -> None:
        monkeypatch.setattr(hardware, "cpu_info", lambda: cpu)

    return use


@pytest.mark.parametrize(
    ("cpu", "expected", "why"),
    [
        (SAPPHIRE_RAPIDS, "bf16", "AMX-BF16"),
        (ZEN4, "bf16", "AVX512-BF16"),
        (AVX2_ONLY, "fp32", "no AMX-BF16 or AVX512-BF16"),
        (replace(ZEN4, avx512_bf16=False, flags=frozenset({"avx512f"})), "fp32", "emulated"),
    ],
    ids=["amx", "avx512-bf16", "avx2-only", "avx512-without-bf16"],
)
def test_cpu_flags_decide_without_measuring(on_cpu, cpu, expected, why):
    on_cpu(cpu)
    choice = choose_precision(CPU, measure=no_measurement)
    assert choice.value == expected and why in choice.reason and cpu.model in choice.reason
    precision = setup_precision("cpu", "auto")
    assert (precision.name, precision.reason) == (choice.value, choice.reason)


def test_an_explicit_precision_is_kept_and_says_so(on_cpu):
    on_cpu(AVX2_ONLY)
    precision = setup_precision("cpu", "bf16")
    assert (precision.name, precision.reason) == ("bf16", "precision=bf16 requested")


@pytest.mark.parametrize(
    "cpu",
    [GRAVITON3, replace(ZEN4, capability="AVX2")],  # torch held to AVX2 kernels
    ids=["arm", "bf16-cpu-on-avx2-kernels"],
)
def test_inconclusive_cpu_measures_and_picks_the_faster(on_cpu, cpu, tmp_path):
    on_cpu(cpu)
    fast = choose_precision(CPU, tmp_path / "a", fake_measure(fp32=100.0, bf16=400.0))
    assert fast.value == "bf16" and "inconclusive" in fast.reason and "4.00x" in fast.reason
    slow = choose_precision(CPU, tmp_path / "b", fake_measure(fp32=100.0, bf16=150.0))
    assert slow.value == "fp32" and "1.50x" in slow.reason  # faster matmul, still not enough


def test_measurement_is_cached_per_cpu_and_torch(on_cpu, tmp_path, monkeypatch):
    on_cpu(GRAVITON3)
    calls: list = []
    first = choose_precision(CPU, tmp_path, fake_measure(100.0, 400.0, calls))
    assert first.value == "bf16" and "measured" in first.reason and len(calls) == 2
    (entry,) = tmp_path.glob("cpu-*.json")
    assert json.loads(entry.read_text())["key"] == GRAVITON3.key()
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]  # no temp files left
    again = choose_precision(CPU, tmp_path, no_measurement)
    assert again.value == "bf16" and "cached in" in again.reason

    other = replace(GRAVITON3, flags=GRAVITON3.flags - {"bf16"})  # another machine kind
    on_cpu(other)
    assert choose_precision(CPU, tmp_path, fake_measure(100.0, 20.0, calls)).value == "fp32"
    assert len(calls) == 4 and len(list(tmp_path.glob("cpu-*.json"))) == 2
    with monkeypatch.context() as patch:
        patch.setattr(torch, "__version__", "9.9.9")  # a torch upgrade measures again
        choose_precision(CPU, tmp_path, fake_measure(100.0, 20.0, calls))
    assert len(calls) == 6

    entry.write_text("{torn")  # a broken cache entry is measured again, not an error
    on_cpu(GRAVITON3)
    assert choose_precision(CPU, tmp_path, fake_measure(100.0, 400.0, calls)).value == "bf16"
    assert len(calls) == 8


def test_the_default_cache_is_the_machines_llmforge_cache(on_cpu, tmp_path):
    on_cpu(GRAVITON3)
    choose_precision(CPU, measure=fake_measure(100.0, 400.0))
    assert len(list((tmp_path / "cache" / "hardware").glob("cpu-*.json"))) == 1


class FakeCuda:
    def __init__(self, name: str, capability: tuple[int, int], native_bf16: bool):
        self.name, self.capability, self.native_bf16 = name, capability, native_bf16
        self.asked: list[dict] = []

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: self.name)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: self.capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", self.is_bf16_supported)

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        self.asked.append({"including_emulation": including_emulation})
        return self.native_bf16 or including_emulation  # torch counts emulation by default


def test_gpu_with_bf16_picks_bf16(monkeypatch):
    gpu = FakeCuda("NVIDIA H200", (9, 0), native_bf16=True)
    gpu.install(monkeypatch)
    choice = choose_precision(torch.device("cuda"))
    assert choice == Choice("bf16", "NVIDIA H200 (sm_90) computes bf16 natively")


def test_gpu_without_bf16_picks_fp16_with_a_scaler(monkeypatch):
    gpu = FakeCuda("Tesla T4", (7, 5), native_bf16=False)
    gpu.install(monkeypatch)
    choice = choose_precision(torch.device("cuda"))
    assert choice.value == "fp16" and "GradScaler" in choice.reason
    assert gpu.asked == [{"including_emulation": False}]  # emulated bf16 does not count


def test_mps_uses_fp32():
    assert choose_precision(torch.device("mps")).value == "fp32"


def test_threads_are_the_usable_physical_cores(monkeypatch, tmp_path):
    # 4 CPUs this process may use: 2 cores with 2 hardware threads each.
    sys_cpu = tmp_path / "cpu"
    for cpu, core in ((0, 0), (1, 0), (2, 1), (3, 1), (4, 2)):
        (sys_cpu / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (sys_cpu / f"cpu{cpu}" / "topology" / "core_id").write_text(f"{core}\n")
        (sys_cpu / f"cpu{cpu}" / "topology" / "physical_package_id").write_text("0\n")
    assert hardware.physical_cores({0, 1, 2, 3}, sys_cpu) == 2
    assert hardware.physical_cores({0, 9}, sys_cpu) == 2  # topology unknown: count CPUs
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert hardware.cgroup_cpu_limit(cpu_max) == 2
    cpu_max.write_text("max 100000\n")
    assert hardware.cgroup_cpu_limit(cpu_max) is None

    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(hardware, "physical_cores", lambda cpus: 2)
    monkeypatch.setattr(hardware, "cgroup_cpu_limit", lambda: None)
    choice = choose_threads({})
    assert choice == Choice(2, "2 physical cores among the 4 CPUs this process may use")
    assert choose_threads({"OMP_NUM_THREADS": "3"}) == Choice(3, "OMP_NUM_THREADS=3")
    assert choose_threads({"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "8"}).value == 1
    monkeypatch.setattr(hardware, "cgroup_cpu_limit", lambda: 1)
    assert "cgroup quota of 1 CPUs" in choose_threads({}).reason


def test_proc_cpuinfo_flags(tmp_path):
    text = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\n"
    text += "processor\t: 1\nmodel name\t: other\n"
    (tmp_path / "cpuinfo").write_text(text)
    fields = hardware._proc_cpuinfo(tmp_path / "cpuinfo")
    assert fields["model name"] == "AMD EPYC" and "avx512_bf16" in fields["flags"].split()
    assert hardware._proc_cpuinfo(tmp_path / "missing") == {}


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_json_records_the_choice_and_why(on_cpu, shakespeare_tokens, tmp_path, keep_threads):
    on_cpu(AVX2_ONLY)  # auto on an AVX2-only CPU trains in fp32
    cfg = small_cfg(max_steps=2, eval_interval=100, precision="auto", threads=1)
    summary = train(cfg, shakespeare_tokens, tmp_path)
    assert summary["precision"] == "fp32" and "AMD EPYC 7R13" in summary["precision_reason"]
    assert (summary["threads"], summary["threads_reason"]) == (1, "threads set in the config")
    assert torch.get_num_threads() == 1
    recorded = json.loads((tmp_path / "train.json").read_text())
    assert recorded["precision_reason"] == summary["precision_reason"]


def test_doctor_says_what_training_uses_and_why(on_cpu, monkeypatch, keep_threads):
    from model import doctor
    from model.config import TrainConfig
    from model.doctor import diagnose, format_diagnosis

    on_cpu(AVX2_ONLY)
    monkeypatch.setattr(doctor, "choose_threads", lambda: Choice(2, "2 physical cores"))
    report = diagnose(TrainConfig(device="cpu", compile="auto", max_steps=10), measure=False)
    assert report["precision"]["value"] == "fp32" and report["threads"]["value"] == 2
    text = format_diagnosis(report)
    assert "precision  fp32: AMD EPYC 7R13: no AMX-BF16 or AVX512-BF16" in text
    assert "compile    off" in text and "threads    2" in text  # 10 steps: too short to pay
    assert diagnose(TrainConfig(device="cpu", compile=True), measure=False)["compile_on"]

    forced = diagnose(TrainConfig(device="cpu", precision="bf16", threads=1), measure=False)
    assert forced["precision"]["value"] == "bf16"
    assert forced["precision"]["reason"].startswith("set in the config (auto would pick fp32")
    assert forced["threads"] == {"value": 1, "reason": "set in the config"}
    measured = diagnose(TrainConfig(device="cpu", threads=1))
    assert set(measured["matmul_gflops"]) == {"fp32", "bf16"}
    assert all(value > 0 for value in measured["matmul_gflops"].values())
    assert "bf16/fp32" in format_diagnosis(measured)
