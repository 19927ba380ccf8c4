"""The ``adamwkit`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

DESCRIPTION = """\
AdamW done right, and the weight decay to use with it.

In Python:
  from adamwkit import AdamW, param_groups
  groups = param_groups(model, weight_decay=0.05)   # decay matrices, not norms or biases
  print(groups.plan)                                # which tensors decay, and why
  opt = AdamW(groups, lr=1e-3, decay_scale="schedule")
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adamwkit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"adamwkit {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adamwkit`` console script; returns the exit code."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
