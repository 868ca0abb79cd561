#!/usr/bin/env bash
# Bits per dimension of the Fashion-MNIST U-Net (results/networks/fashion_mnist_unet.pt, its
# unconditional model: the null class) on the first N test images, by the probability-flow ODE with
# uniform dequantization: the bytes y in 0..255 become x = (y + u - 127.5) / 127.5, u ~ U[0, 1)^784,
# so -log2 P(y) <= -log2 p(x) + 784 log2(127.5), which diffode likelihood adds (bin_width 1, scale
# 127.5). The divergence is Hutchinson's with one Rademacher probe per point (784 exact passes per
# evaluation would cost 784 times more), Dopri5 at rtol = atol = 1e-3, the network in float32.
#   experiments/bits_per_dim/fashion_mnist.sh [diffode] [N]
set -euo pipefail
diffode=${1:-build/experiments/diffode}
n=${2:-1000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3=/usr/bin/python3
"$python3" - "$work/test.h5" "$n" <<'PY'
import gzip, sys
import h5py, numpy as np
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
with h5py.File(sys.argv[1], "w") as h:
    h["y"] = images[: int(sys.argv[2])].astype(np.float64)
PY
cat > "$work/bpd.toml" <<EOT
[process]
name = "edm"
[model]
kind = "network"
file = "results/networks/fashion_mnist_unet.pt"
dtype = "float32"
[data]
source = "hdf5"
file = "$work/test.h5"
dataset = "y"
scale = 127.5
offset = 127.5
bin_width = 1
seed = 0
[likelihood]
rtol = 1e-3
atol = 1e-3
prior = "gaussian"
divergence = "hutchinson"
probes = 1
[output]
file = "$work/bpd.h5"
EOT
"$diffode" likelihood "$work/bpd.toml" --threads 2
