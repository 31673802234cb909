#!/usr/bin/env bash
# The prepared GPU check: encoders and fusion training in fp32 vs bf16, then the tests marked
# gpu; one Markdown table (--out, default gpu-bench.md). See benchmarks/gpu_bench.py.
#   bash benchmarks/gpu.sh                          # one GPU, under 8 minutes on an H200
#   bash benchmarks/gpu.sh --device cpu --tiny      # anywhere, CI-sized
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" benchmarks/gpu_bench.py "$@"
