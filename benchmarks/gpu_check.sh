#!/usr/bin/env bash
# benchmarks/gpu_check.py on a bare CUDA machine without network: medcl's import-time
# dependencies that such a machine lacks (monai, pydicom, nibabel, tensorboardX) come as wheels
# from .whl/ (README, "GPU check"), installed into /tmp/site.
#   bash benchmarks/gpu_check.sh [gpu_check.py options]     (figures: ${OUT:-.}/gpu_check.json)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .whl/*.whl ||
  python3 -c "import glob, zipfile; [zipfile.ZipFile(w).extractall('/tmp/site') for w in glob.glob('.whl/*.whl')]"
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out "${OUT:-.}/gpu_check.json" "$@"
