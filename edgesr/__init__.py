"""edgesr: turn a big super-resolution network into a small, fast, quantized one for phones."""

__version__ = "0.1.0"
