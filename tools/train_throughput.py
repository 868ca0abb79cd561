#!/usr/bin/python3
"""Training throughput of the same residual MLP and step as `diffode train`, written in PyTorch.

The network, conditioning and loss follow models/torch/score_mlp_torch.cpp and training_torch.cpp
(EDM process and preconditioning, Karras et al. 2022, arXiv:2206.00364; AdamW, warm-up, clipping,
EMA); data are fresh draws of the 2-D ring. Prints samples/s for a fixed batch and thread count, to
set beside the samples/s that `diffode train` writes to its history file (same batch, threads).

    /usr/bin/python3 tools/train_throughput.py --steps 300 --batch 256 --threads 1
"""
import argparse
import math
import time

import torch


class ScoreMlp(torch.nn.Module):
    def __init__(self, dims=2, width=128, blocks=3, embedding_dims=64):
        super().__init__()
        self.half = embedding_dims // 2
        self.input = torch.nn.Linear(dims, width)
        self.embed_first = torch.nn.Linear(embedding_dims, width)
        self.embed_second = torch.nn.Linear(width, width)
        self.blocks = torch.nn.ModuleList()
        for _ in range(blocks):
            self.blocks.append(torch.nn.ModuleDict({
                "norm": torch.nn.LayerNorm(width), "first": torch.nn.Linear(width, width),
                "condition": torch.nn.Linear(width, width), "second": torch.nn.Linear(width, width)}))
        self.final_norm = torch.nn.LayerNorm(width)
        self.output = torch.nn.Linear(width, dims)
        torch.nn.init.zeros_(self.output.weight)
        torch.nn.init.zeros_(self.output.bias)

    def forward(self, x_in, c_noise):
        freqs = torch.pow(1e-4, torch.arange(self.half, dtype=x_in.dtype) / max(1, self.half - 1))
        phase = c_noise.reshape(-1, 1) * freqs.reshape(1, -1)
        emb = torch.cat([torch.cos(phase), torch.sin(phase)], 1)
        cond = torch.nn.functional.silu(self.embed_second(torch.nn.functional.silu(self.embed_first(emb))))
        h = self.input(x_in)
        for b in self.blocks:
            z = b["first"](torch.nn.functional.silu(b["norm"](h))) + b["condition"](cond)
            h = h + b["second"](torch.nn.functional.silu(z))
        return self.output(torch.nn.functional.silu(self.final_norm(h)))


def ring(n, generator):
    k = torch.randint(0, 8, (n,), generator=generator)
    angle = 2 * math.pi * k.double() / 8
    centre = torch.stack([2 * torch.cos(angle), 2 * torch.sin(angle)], 1)
    return centre + 0.2 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sigma-data", type=float, default=1.43)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = ScoreMlp()
    ema = ScoreMlp()
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
    sd = a.sigma_data
    start = time.perf_counter()
    for step in range(a.steps):
        g = torch.Generator().manual_seed(step)
        x0 = ring(a.batch, g)
        sigma = torch.exp(-1.2 + 1.2 * torch.randn(a.batch, generator=g, dtype=torch.float64)).reshape(-1, 1)
        x = x0 + sigma * torch.randn(a.batch, 2, generator=g, dtype=torch.float64)
        c_skip = sd * sd / (sigma * sigma + sd * sd)
        c_out = sigma * sd / torch.sqrt(sigma * sigma + sd * sd)
        target = ((x0 - c_skip * x) / c_out).float()
        c_in = (1 / torch.sqrt(sd * sd + sigma * sigma)).float()
        c_noise = (torch.log(sigma) / 4).float().reshape(-1)
        loss = (net(c_in * x.float(), c_noise) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 200)
        opt.step()
        with torch.no_grad():
            d = min(0.999, (1 + step) / (10 + step))
            for e, w in zip(ema.parameters(), net.parameters()):
                e.mul_(d).add_(w, alpha=1 - d)
        loss.item()
    seconds = time.perf_counter() - start
    print(f"pytorch {torch.__version__}: {a.steps} steps of {a.batch} rows, {a.threads} thread(s): {seconds:.2f} s, "
          f"{a.steps / seconds:.2f} steps/s, {a.steps * a.batch / seconds:.0f} samples/s; final loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
