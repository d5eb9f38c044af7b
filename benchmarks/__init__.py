"""edgesr benchmarks: speed and memory figures, printed (never asserted). Run `python -m benchmarks -h`."""
