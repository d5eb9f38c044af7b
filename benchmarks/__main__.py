"""Benchmarks entry point: `python -m benchmarks train RECIPE [k=v ...] [--steps N]`."""

from __future__ import annotations

import argparse
import sys

from benchmarks import train_throughput


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="bench", required=True)
    train_throughput.add_parser(sub)
    args = p.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
