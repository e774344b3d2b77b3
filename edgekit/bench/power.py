"""Board power while a benchmark runs: NVML on NVIDIA GPUs, tegrastats on Jetson; absent elsewhere."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time

_TEGRA_RAIL = re.compile(r"\b(VDD_IN|POM_5V_IN|VIN_SYS_5V0|VDD_GPU_SOC)\s+(\d+)mW")


class PowerSampler:
    """Samples power in watts in a background thread: `with PowerSampler("cuda:0") as p: ...; p.mean_w`."""

    def __init__(self, device: str, interval_s: float = 0.05):
        self.device, self.interval = device, interval_s
        self.samples: list[float] = []
        self.source: str | None = None
        self._stop = threading.Event()
        self._thread = self._proc = None
        self.t0 = self.t1 = 0.0

    # sources -----------------------------------------------------------------------------------
    def _nvml_reader(self):
        d = self.device.lower()
        if not d.startswith("cuda"):
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
            idx = int(d.split(":")[1]) if ":" in d else 0
            h = pynvml.nvmlDeviceGetHandleByIndex(idx)
            pynvml.nvmlDeviceGetPowerUsage(h)  # raises where the board does not report power
        except Exception:
            return None
        self.source = "nvml"
        return lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0

    def _tegrastats(self):
        if not shutil.which("tegrastats"):
            return False
        try:
            self._proc = subprocess.Popen(["tegrastats", "--interval", str(max(10, int(self.interval * 1000)))],
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return False
        self.source = "tegrastats"
        return True

    def _run_reader(self, read):
        while not self._stop.is_set():
            try:
                self.samples.append(read())
            except Exception:
                return
            self._stop.wait(self.interval)

    def _run_tegra(self):
        for line in self._proc.stdout:
            m = _TEGRA_RAIL.search(line)
            if m:
                self.samples.append(int(m.group(2)) / 1000.0)
            if self._stop.is_set():
                return

    # lifecycle ---------------------------------------------------------------------------------
    def __enter__(self):
        read = self._nvml_reader()
        if read is not None:
            self._thread = threading.Thread(target=self._run_reader, args=(read,), daemon=True)
        elif self._tegrastats():
            self._thread = threading.Thread(target=self._run_tegra, daemon=True)
        self.t0 = time.perf_counter()
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self.t1 = time.perf_counter()
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
        if self._thread:
            self._thread.join(timeout=2)

    @property
    def mean_w(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 2) if self.samples else None

    def joules_per_image(self, images: int) -> float | None:
        """Mean power times elapsed time, divided by the images processed in that window."""
        if self.mean_w is None or images <= 0:
            return None
        return round(self.mean_w * (self.t1 - self.t0) / images, 4)
