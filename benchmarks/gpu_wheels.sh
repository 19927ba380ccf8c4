#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh, for a GPU machine that has no network: Optuna and its
# pure-Python needs, for its Python 3.12 (its image has torch, transformers, peft,
# safetensors, scikit-learn, matplotlib and rich already). Run once, here, in the repo root:
#   bash benchmarks/gpu_wheels.sh        # fills .whl/ (about 5.4 MB; keep it git-ignored)
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    optuna==5.0.0 alembic==1.20.1 colorlog==6.12.0 mako==1.4.3 sqlalchemy==2.1.9
ls .whl
