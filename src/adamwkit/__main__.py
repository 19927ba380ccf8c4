"""``python -m adamwkit``: the command line, as the ``adamwkit`` script.

Under ``torchrun --nproc_per_node N -m adamwkit tune ...`` every rank runs this: rank 0
prints the result, the other ranks only train (:mod:`adamwkit.tuning.distributed`); a
group that lost a rank, or whose rank 0 failed, ends each process with one line.
"""

from __future__ import annotations

import sys

from .cli import main


def _main() -> int:
    try:
        from .tuning import distributed
    except ImportError:  # tune's extra is missing: the command line says so itself
        return main()
    if distributed.launched() and distributed.rank() != 0:
        distributed.quiet_result = True
    try:
        return main()
    except (distributed.GroupLost, distributed.LeaderFailed) as err:
        print(f"adamwkit tune (rank {distributed.rank()}): error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_main())
