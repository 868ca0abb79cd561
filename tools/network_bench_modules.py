#!/usr/bin/python3
"""TorchScript modules of diffode's network shapes, and the cost of calling them from a Python loop.

The C++ side of the comparison is benchmarks/network_torch_bench.cpp, which loads the same files;
scripts/bench.sh --networks runs both, alternating, at equal thread counts.

    /usr/bin/python3 tools/network_bench_modules.py export DIR
    /usr/bin/python3 tools/network_bench_modules.py time DIR --threads 2 [--calls 20] [--warmup 5]

`export` writes three modules, float32, with random weights (the cost of an evaluation does not
depend on them), each an EDM-preconditioned denoiser D(x~; sigma~) = c_skip x~ + c_out F(c_in x~,
log(sigma~) / 4) (Karras et al. 2022, arXiv:2206.00364, Table 1) as diffode's own networks compute it
(models/torch/score_mlp_torch.cpp, unet_torch.cpp), so that diffode loads them as TorchScript models
with prediction x0, time_input "sigma" and scale-free input:
    mlp2.pt   (x [N, 2], sigma [N]) -> x0: the residual MLP of results/networks/ring2d_mlp_2000.pt
              (width 128, 3 blocks, 64 sinusoidal noise features), sigma_data 1.43
    mlp16.pt  (x [N, 16], sigma [N]) -> x0: the same MLP on 16 dimensions (iso16_mlp.pt), sigma_data 1.1
    unet.pt   (x [N, 784], sigma [N], class [N]) -> x0: the U-Net of fashion_mnist_unet.pt (1x28x28,
              base 16 channels, multipliers 1, 2, 2, one block per level, one-head attention at 7x7,
              GroupNorm of 8 groups, 64 noise features, 10 classes and the null class 10), sigma_data 0.5
`time` loads them with torch.jit.load and times `calls` forward calls of each under torch.no_grad()
(after `warmup` calls, which also let TorchScript's profiling executor settle), on fixed float32
inputs at batch 4096 (MLPs) and 256 (U-Net), the null class for the U-Net. It prints one line per
module, "name batch wall_ms cpu_ms" (per call; CPU time of the whole process, all threads), and then
the same for the eager (unscripted) module, "name-eager".
"""
import argparse
import math
import os
import sys
import time
from typing import List

import torch

MODULES = {
    # name: (kind, dims, batch, sigma_data)
    "mlp2": ("mlp", 2, 4096, 1.43),
    "mlp16": ("mlp", 16, 4096, 1.1),
    "unet": ("unet", 784, 256, 0.5),
}
CLASSES = 10


def noise_embedding(c_noise, dims: int):
    # 10000^(-k / (half - 1)), k = 0 .. half-1: EDM's PositionalEmbedding with endpoint = True.
    half = dims // 2
    k = torch.arange(half, dtype=c_noise.dtype, device=c_noise.device)
    frequencies = torch.pow(torch.full_like(k, 1e-4), k / max(1.0, float(half - 1)))
    phase = c_noise.reshape(-1, 1) * frequencies.reshape(1, -1)
    return torch.cat([torch.cos(phase), torch.sin(phase)], 1)


class MlpBlock(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.first = torch.nn.Linear(width, width)
        self.condition = torch.nn.Linear(width, width)
        self.second = torch.nn.Linear(width, width)

    def forward(self, h, condition_act):
        z = self.first(torch.nn.functional.silu(self.norm(h))) + self.condition(condition_act)
        return h + self.second(torch.nn.functional.silu(z))


class ScoreMlp(torch.nn.Module):
    def __init__(self, dims: int, width: int = 128, blocks: int = 3, embedding_dims: int = 64):
        super().__init__()
        self.embedding_dims = embedding_dims
        self.input = torch.nn.Linear(dims, width)
        self.embed_first = torch.nn.Linear(embedding_dims, width)
        self.embed_second = torch.nn.Linear(width, width)
        self.blocks = torch.nn.ModuleList([MlpBlock(width) for _ in range(blocks)])
        self.final_norm = torch.nn.LayerNorm(width)
        self.output = torch.nn.Linear(width, dims)

    def forward(self, x, c_noise):
        silu = torch.nn.functional.silu
        condition = self.embed_second(silu(self.embed_first(noise_embedding(c_noise, self.embedding_dims))))
        condition_act = silu(condition)
        h = self.input(x)
        for block in self.blocks:
            h = block(h, condition_act)
        return self.output(silu(self.final_norm(h)))


SKIP_SCALE = math.sqrt(0.5)


class ResidualBlock(torch.nn.Module):
    def __init__(self, c_in: int, c_out: int, embedding_channels: int, groups: int):
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(groups, c_in)
        self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
        self.embed = torch.nn.Linear(embedding_channels, c_out)
        self.norm2 = torch.nn.GroupNorm(groups, c_out)
        self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = torch.nn.Conv2d(c_in, c_out, 1) if c_in != c_out else torch.nn.Identity()
        self.skip_scale = SKIP_SCALE

    def forward(self, x, emb):
        silu = torch.nn.functional.silu
        h = self.conv1(silu(self.norm1(x)))
        h = h + self.embed(emb).unsqueeze(-1).unsqueeze(-1)
        h = self.conv2(silu(self.norm2(h)))
        return (self.skip(x) + h) * self.skip_scale


class Attention(torch.nn.Module):
    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = torch.nn.GroupNorm(groups, channels)
        self.qkv = torch.nn.Conv2d(channels, 3 * channels, 1)
        self.projection = torch.nn.Conv2d(channels, channels, 1)
        self.skip_scale = SKIP_SCALE

    def forward(self, x):
        n, c, h, w = x.shape
        d = c // self.heads
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, d, h * w)
        q = qkv[:, 0].reshape(n * self.heads, d, h * w).transpose(1, 2)
        k = qkv[:, 1].reshape(n * self.heads, d, h * w).transpose(1, 2)
        v = qkv[:, 2].reshape(n * self.heads, d, h * w).transpose(1, 2)
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(d), -1)
        out = torch.bmm(weights, v).transpose(1, 2).reshape(n, c, h, w)
        return (x + self.projection(out)) * self.skip_scale


class DownLevel(torch.nn.Module):
    """One encoder level: its residual blocks, then (but at the last level) a stride-2 convolution."""

    def __init__(self, blocks, downsample):
        super().__init__()
        self.blocks = torch.nn.ModuleList(blocks)
        self.has_downsample = downsample is not None
        self.downsample = downsample if downsample is not None else torch.nn.Identity()

    def forward(self, h, emb, skips: List[torch.Tensor]):
        for block in self.blocks:
            h = block(h, emb)
            skips.append(h)
        if self.has_downsample:
            h = self.downsample(h)
            skips.append(h)
        return h


class UpLevel(torch.nn.Module):
    """One decoder level: its residual blocks on [h, skip], then (but at the top) nearest-neighbour
    upsampling and a 3x3 convolution."""

    def __init__(self, blocks, upsample):
        super().__init__()
        self.blocks = torch.nn.ModuleList(blocks)
        self.has_upsample = upsample is not None
        self.upsample = upsample if upsample is not None else torch.nn.Identity()

    def forward(self, h, emb, skips: List[torch.Tensor]):
        for block in self.blocks:
            h = block(torch.cat([h, skips.pop()], 1), emb)
        if self.has_upsample:
            h = self.upsample(torch.nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
        return h


class Unet(torch.nn.Module):
    """models/torch/unet_torch.cpp's layer list (UnetImpl), in the same order."""

    def __init__(self, channels=1, height=28, width=28, base=16, multipliers=(1, 2, 2), blocks_per_level=1,
                 heads=1, groups=8, embedding_dims=64, classes=CLASSES):
        super().__init__()
        self.shape = (channels, height, width)
        self.embedding_dims = embedding_dims
        levels = len(multipliers)
        embedding_channels = 4 * base
        self.class_embedding = torch.nn.Embedding(classes + 1, embedding_dims)
        self.embed_first = torch.nn.Linear(embedding_dims, embedding_channels)
        self.embed_second = torch.nn.Linear(embedding_channels, embedding_channels)
        self.input = torch.nn.Conv2d(channels, base, 3, padding=1)
        skips, ch = [base], base
        down = []
        for level, multiplier in enumerate(multipliers):
            blocks = []
            for _ in range(blocks_per_level):
                blocks.append(ResidualBlock(ch, base * multiplier, embedding_channels, groups))
                ch = base * multiplier
                skips.append(ch)
            downsample = None
            if level + 1 < levels:
                downsample = torch.nn.Conv2d(ch, ch, 3, stride=2, padding=1)
                skips.append(ch)
            down.append(DownLevel(blocks, downsample))
        self.down = torch.nn.ModuleList(down)
        self.middle_first = ResidualBlock(ch, ch, embedding_channels, groups)
        self.attention = Attention(ch, heads, groups)
        self.middle_second = ResidualBlock(ch, ch, embedding_channels, groups)
        up = []
        for level in reversed(range(levels)):
            blocks = []
            for _ in range(blocks_per_level + 1):
                blocks.append(ResidualBlock(ch + skips.pop(), base * multipliers[level], embedding_channels, groups))
                ch = base * multipliers[level]
            up.append(UpLevel(blocks, torch.nn.Conv2d(ch, ch, 3, padding=1) if level > 0 else None))
        self.up = torch.nn.ModuleList(up)
        self.output_norm = torch.nn.GroupNorm(groups, ch)
        self.output = torch.nn.Conv2d(ch, channels, 3, padding=1)

    def forward(self, x, c_noise, label):
        silu = torch.nn.functional.silu
        n = x.shape[0]
        embedding = noise_embedding(c_noise, self.embedding_dims) + self.class_embedding(label)
        emb = silu(self.embed_second(silu(self.embed_first(embedding))))
        h = self.input(x.reshape(n, self.shape[0], self.shape[1], self.shape[2]))
        skips = [h]
        for level in self.down:
            h = level(h, emb, skips)
        h = self.middle_first(h, emb)
        h = self.attention(h)
        h = self.middle_second(h, emb)
        for level in self.up:
            h = level(h, emb, skips)
        return self.output(silu(self.output_norm(h))).reshape(n, -1)


class EdmDenoiser(torch.nn.Module):
    """D(x~; sigma~) = c_skip x~ + c_out F(c_in x~, c_noise) (models/network.hpp's conditioning)."""

    def __init__(self, network, sigma_data: float):
        super().__init__()
        self.network = network
        self.sigma_data = sigma_data

    def coefficients(self, sigma):
        sd = self.sigma_data
        s = sigma.reshape(-1, 1)
        c_in = torch.rsqrt(s * s + sd * sd)
        c_skip = sd * sd / (s * s + sd * sd)
        c_out = sd * s * c_in
        c_noise = (0.25 * torch.log(sigma)).clamp(-math.log(1e8) / 4, math.log(1e8) / 4)
        return c_in, c_skip, c_out, c_noise


class MlpDenoiser(EdmDenoiser):
    def forward(self, x, sigma):
        c_in, c_skip, c_out, c_noise = self.coefficients(sigma)
        return c_skip * x + c_out * self.network(c_in * x, c_noise)


class UnetDenoiser(EdmDenoiser):
    def forward(self, x, sigma, label):
        c_in, c_skip, c_out, c_noise = self.coefficients(sigma)
        return c_skip * x + c_out * self.network(c_in * x, c_noise, label)


def build(name):
    kind, dims, _, sigma_data = MODULES[name]
    torch.manual_seed(0)
    if kind == "mlp":
        module = MlpDenoiser(ScoreMlp(dims), sigma_data)
    else:
        module = UnetDenoiser(Unet(), sigma_data)
    return module.float().eval()


def inputs(name):
    kind, dims, batch, _ = MODULES[name]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, dims, generator=generator)
    sigma = torch.ones(batch)
    if kind == "mlp":
        return (x, sigma)
    return (x, sigma, torch.full((batch,), CLASSES, dtype=torch.int64))


def export(folder):
    os.makedirs(folder, exist_ok=True)
    for name in MODULES:
        module = build(name)
        scripted = torch.jit.script(module)
        with torch.no_grad():
            example = inputs(name)
            difference = (scripted(*example) - module(*example)).abs().max().item()
        if not difference <= 1e-4:
            sys.exit(f"{name}: the scripted module differs from the eager one by {difference}")
        torch.jit.save(scripted, os.path.join(folder, f"{name}.pt"))
        print(f"{name}: {sum(p.numel() for p in module.parameters())} parameters, batch {MODULES[name][2]}")


def per_call_ms(module, args, calls, warmup):
    """Wall and process CPU time (all threads) of one call, in ms."""
    with torch.no_grad():
        for _ in range(warmup):
            module(*args)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            module(*args)
        return 1e3 * (time.perf_counter() - wall) / calls, 1e3 * (time.process_time() - cpu) / calls


def time_modules(folder, threads, calls, warmup, only):
    torch.set_num_threads(threads)
    for name in only or MODULES:
        args = inputs(name)
        batch = MODULES[name][2]
        module = torch.jit.load(os.path.join(folder, f"{name}.pt"))
        module.eval()
        print(f"{name} {batch} %.4f %.4f" % per_call_ms(module, args, calls, warmup), flush=True)
        print(f"{name}-eager {batch} %.4f %.4f" % per_call_ms(build(name), args, calls, warmup), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("folder")
    t = sub.add_parser("time")
    t.add_argument("folder")
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--calls", type=int, default=20)
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--only", nargs="*", choices=list(MODULES))
    a = parser.parse_args()
    if a.command == "export":
        export(a.folder)
    else:
        time_modules(a.folder, a.threads, a.calls, a.warmup, a.only)


if __name__ == "__main__":
    main()
