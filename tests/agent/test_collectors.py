"""Collectors: names, labels and units; absent hardware produces nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from monitoringserver.agent.collectors.gpu import GpuCollector
from monitoringserver.agent.collectors.hardware import HardwareCollector
from monitoringserver.agent.collectors.processes import ProcessesCollector
from monitoringserver.agent.collectors.services import ServicesCollector, run_command
from monitoringserver.agent.collectors.system import SystemCollector
from monitoringserver.agent.metrics import Emitter, gauge, run_collectors

BASE = {"server_id": "n1", "instance": "n1", "job": "node"}


def names(out: Emitter) -> set[str]:
    return {d.name for d, _, _ in out}


def test_system_collector_node_exporter_names() -> None:
    out = Emitter(BASE)
    SystemCollector().collect(out)
    expected = {
        "node_cpu_seconds_total",
        "cpu_usage_percent",
        "node_load1",
        "node_load15",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_memory_SwapTotal_bytes",
        "memory_usage_percent",
        "node_filesystem_avail_bytes",
        "node_filesystem_files_free",
        "disk_usage_percent",
        "node_network_receive_bytes_total",
        "node_boot_time_seconds",
        "node_context_switches_total",
        "node_processes_pids",
        "node_filefd_allocated",
        "node_tcp_connection_states",
    }
    assert expected <= names(out)
    for desc, labels, _ in out:
        d = dict(labels)
        assert {k: d[k] for k in BASE} == BASE
        assert desc.type in ("gauge", "counter")
        assert desc.help
    modes = {dict(lbl)["mode"] for d, lbl, _ in out if d.name == "node_cpu_seconds_total"}
    assert {"user", "system", "idle", "iowait", "steal"} <= modes
    fs = [dict(lbl) for d, lbl, _ in out if d.name == "node_filesystem_avail_bytes"]
    assert all({"device", "fstype", "mountpoint"} <= set(f) for f in fs)
    assert 0 <= (out.value("memory_usage_percent") or -1) <= 100


def test_system_collector_tolerates_missing_proc(tmp_path: Path) -> None:
    out = Emitter(BASE)
    SystemCollector(proc=tmp_path).collect(out)
    assert "node_tcp_connection_states" not in names(out)
    assert "node_filefd_allocated" not in names(out)
    assert "node_cpu_seconds_total" in names(out)


def test_hardware_with_fake_sensors() -> None:
    temp = SimpleNamespace(label="Core 0", current=45.0, high=80.0, critical=95.0)
    fake = SimpleNamespace(
        sensors_temperatures=lambda: {
            "coretemp": [temp, SimpleNamespace(label="", current=40.0, critical=None)]
        },
        sensors_fans=lambda: {"it87": [SimpleNamespace(label="", current=1200)]},
        sensors_battery=lambda: SimpleNamespace(percent=77.0, power_plugged=False, secsleft=3600),
        cpu_freq=lambda percpu: [SimpleNamespace(current=2400.0, min=800.0, max=3600.0)],
    )
    out = Emitter(BASE)
    HardwareCollector(fake).collect(out)
    assert out.value("node_hwmon_temp_celsius", chip="coretemp", sensor="Core 0") == 45.0
    assert out.value("node_hwmon_temp_celsius", sensor="temp2") == 40.0
    assert out.value("node_hwmon_temp_crit_celsius", sensor="Core 0") == 95.0
    assert out.value("node_hwmon_fan_rpm", sensor="fan1") == 1200
    assert out.value("node_power_supply_capacity") == 77.0
    assert out.value("node_power_supply_time_to_empty_seconds") == 3600
    assert out.value("node_cpu_scaling_frequency_hertz", cpu="0") == 2.4e9


def test_hardware_absent_sensors_produce_nothing() -> None:
    def broken(percpu: bool) -> None:
        raise OSError("no sysfs")

    fake = SimpleNamespace(sensors_temperatures=dict, sensors_battery=lambda: None, cpu_freq=broken)
    out = Emitter(BASE)
    HardwareCollector(fake).collect(out)
    assert len(out) == 0


def test_services_from_allowlist() -> None:
    seen: list[list[str]] = []

    def runner(argv: Sequence[str], timeout: float) -> tuple[int, str]:
        seen.append(list(argv))
        return 0, (
            "Id=nginx.service\nActiveState=active\nNRestarts=3\n\n"
            "Id=db.service\nActiveState=failed\nNRestarts=\n"
        )

    out = Emitter(BASE)
    ServicesCollector(["nginx", "db.service"], runner=runner).collect(out)
    assert seen == [
        ["systemctl", "show", "--property=Id,ActiveState,NRestarts", "nginx.service", "db.service"]
    ]
    assert out.value("node_systemd_unit_state", name="nginx.service", state="active") == 1
    assert out.value("node_systemd_unit_state", name="nginx.service", state="failed") == 0
    assert out.value("node_systemd_unit_state", name="db.service", state="failed") == 1
    assert out.value("node_systemd_service_restart_total", name="nginx.service") == 3
    assert out.value("node_systemd_service_restart_total", name="db.service") is None
    empty = Emitter(BASE)
    ServicesCollector(["x"], runner=lambda a, t: (1, "")).collect(empty)
    ServicesCollector([], runner=runner).collect(empty)
    assert len(empty) == 0


@pytest.mark.parametrize(
    ("argv", "status"),
    [(["true"], 0), (["false"], 1), (["/nonexistent/cmd"], 127), (["sleep", "5"], 124)],
)
def test_run_command(argv: list[str], status: int) -> None:
    assert run_command(argv, 0.5)[0] == status


def test_top_processes() -> None:
    c = ProcessesCollector(3)
    out = Emitter(BASE)
    c.collect(out)
    c.collect(out)
    cpu = [lbl for d, lbl, _ in out if d.name == "process_top_cpu_percent"]
    assert 1 <= len(cpu) <= 6
    assert all("pid" in dict(lbl) and "name" in dict(lbl) for lbl in cpu)
    none = Emitter(BASE)
    ProcessesCollector(0).collect(none)
    assert len(none) == 0


class FakeNvml:
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init
        self.shutdown = False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"Tesla T4"

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h}"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=50 + h, memory=10)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(used=100, total=1000)

    def nvmlDeviceGetTemperature(self, h: int, kind: int) -> int:
        return 60

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise RuntimeError("Not Supported")
        return 70_000


def test_gpu_with_fake_nvml() -> None:
    nv = FakeNvml()
    c = GpuCollector(nv)
    out = Emitter(BASE)
    c.collect(out)
    assert out.value("nvidia_gpu_utilization_percent", gpu="1", name="Tesla T4") == 51
    assert out.value("nvidia_gpu_power_watts", gpu="0") == 70.0
    assert out.value("nvidia_gpu_power_watts", gpu="1") is None
    assert out.value("nvidia_gpu_memory_total_bytes", uuid="GPU-0") == 1000
    c.close()
    assert nv.shutdown


def test_gpu_without_driver_is_quiet() -> None:
    out = Emitter(BASE)
    c = GpuCollector(FakeNvml(fail_init=True))
    c.collect(out)
    c.collect(out)
    GpuCollector(None).collect(out)
    assert len(out) == 0


def test_failing_collector_does_not_stop_others() -> None:
    class Broken:
        name = "broken"

        def collect(self, out: Emitter) -> None:
            raise RuntimeError("boom")

    class Fine:
        name = "fine"

        def collect(self, out: Emitter) -> None:
            out.add(gauge("x", "", "x"), 1)
            out.add(gauge("y", "", "y"), float("nan"))
            out.add(gauge("z", "", "z"), "n/a")  # type: ignore[arg-type]

    out = Emitter(BASE)
    assert run_collectors([Broken(), Fine()], out) == {"broken": "RuntimeError: boom"}
    assert names(out) == {"x"}
