#!/usr/bin/env bash
# The CUDA path on a GPU machine in one short run: the three homework scripts end to end on
# full-size synthetic data (timed, projected to full epochs), the input-pipeline benchmark, and
# task 1.1 on real MNIST at its defaults.
#
#   bash benchmarks/cuda_check.sh OUT_DIR [MNIST_PARENT_DIR] [EPOCH_FRACTION]
#
# Each stage has its own time limit, and one that fails does not stop the others.
set -u
out=${1:?usage: cuda_check.sh OUT_DIR [MNIST_PARENT_DIR] [EPOCH_FRACTION]}
mnist=${2:-}
fraction=${3:-0.25}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}  # DEVICE=cpu: a dry run of this script without a GPU
mkdir -p "$out"
export PYTHONUNBUFFERED=1

{ nvidia-smi -L; nproc; "$py" -c "import torch, torchvision; print('torch', torch.__version__,
  'torchvision', torchvision.__version__, torch.cuda.get_device_name())"; } > "$out/env.txt" 2>&1

SECONDS=0
timeout 270 "$py" benchmarks/bench_scripts.py --synthetic --device "$device" --fraction "$fraction" \
    --keep "$out/scripts" > "$out/bench_scripts_cuda.txt" 2>&1
echo "bench_scripts: exit $?, ${SECONDS} s" >> "$out/env.txt"
tar czf "$out/scripts_results.tar.gz" -C "$out/scripts" --exclude=plots . 2>/dev/null
rm -rf "$out/scripts"

SECONDS=0
timeout 90 "$py" benchmarks/bench_pipeline.py --device "$device" --steps 150 --warmup 20 --workers 0,4 \
    > "$out/bench_pipeline_cuda.txt" 2>&1
echo "bench_pipeline: exit $?, ${SECONDS} s" >> "$out/env.txt"

if [ -n "$mnist" ]; then
    SECONDS=0
    timeout 90 "$py" homework_cnn_vs_fc_comparison.py --part 1.1 --device "$device" --data-dir "$mnist" \
        --no-download --results-dir "$out/mnist/results" --plots-dir "$out/mnist/plots" \
        > "$out/mnist_cuda.txt" 2>&1
    echo "task 1.1 on MNIST: exit $?, ${SECONDS} s" >> "$out/env.txt"
    tar czf "$out/mnist_results.tar.gz" -C "$out/mnist" . 2>/dev/null
    rm -rf "$out/mnist"
fi
cat "$out/env.txt"
