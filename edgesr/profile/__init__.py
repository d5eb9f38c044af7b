"""Latency profiling: measure students on devices, keep the measurements, predict the rest.

- `store`: the versioned profile format (devices/profiles/<device>/*.yaml) and its records;
- `timing`: warm-up + timed runs, wall and CPU clocks, peak RSS;
- `host`: time artifacts and width sweeps here, with any registered export target or eager PyTorch;
- `adb`: time on Android through adb (benchmark_model, executor_runner);
- `aihub` / `aihub_numerics`: profile jobs and on-device PSNR on Qualcomm AI Hub's hosted phones;
- `importers` / `ingest`: parse results produced elsewhere into records;
- `layers` / `latency_model`: the NetAdapt-style per-layer table and its predictions;
- `sweep`: `edgesr profile sweep` (the commands are edgesr/cli/profile.py; choosing a width from the
  measurements is edgesr.selection, and its command edgesr/cli/select.py; docs/devices.md).
"""
