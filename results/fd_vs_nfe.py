#!/usr/bin/env python3
"""Figure and table of the Fashion-MNIST FD-vs-NFE sweep (experiments/fd_vs_nfe_fashion_mnist.toml).

    python3 results/fd_vs_nfe.py SWEEP.h5 [SWEEP.h5 ...] FIGURE.png [--train-test FD] [--floor FD]
    python3 results/fd_vs_nfe.py results/fd_vs_nfe.h5 results/fd_vs_nfe_families.h5 results/fd_vs_nfe.png

Reads the sweeps' runs (each run's resolved config gives its guidance scale), plots the Frechet
distance on the classifier's features (fd_fmnist_classifier) and the class accuracy against NFE, one
line per sampler and one column per guidance scale, and prints a Markdown table. --train-test and
--floor draw the train-vs-test distance and the distance of a train subset of the run's size to the
whole test set (what a perfect model scores at that count) as horizontal lines (measured with diffode fd; see results/fd_vs_nfe.md).
"""
import argparse
import tomllib

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def runs(path, column):
    out = []
    with h5py.File(path, "r") as f:
        for run_id, g in f["runs"].items():
            a = g.attrs
            config = tomllib.loads(text(a["config"]))
            out.append({
                "id": run_id,
                "sampler": text(a["sampler"]),
                "status": text(a["status"]),
                "scale": float(config.get("guidance", {}).get("scale", 0.0)),
                "steps": int(a["steps"]),
                "nfe": float(a["nfe"]),
                "fd": float(a[column]) if column in a else float("nan"),
                "accuracy": float(a["class_accuracy"]),
                "samples": int(config["run"]["samples"]),
                "wall_time": float(a["wall_time"]),
            })
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("paths", nargs="+", help="the sweeps' HDF5 files, then the figure")
    p.add_argument("--column", default="fd_fmnist_classifier")
    p.add_argument("--train-test", type=float)
    p.add_argument("--floor", type=float)
    o = p.parse_args()
    if len(o.paths) < 2:
        p.error("give at least one sweep file and the figure")
    sweeps, figure = o.paths[:-1], o.paths[-1]
    rs = [r for path in sweeps for r in runs(path, o.column) if r["status"] == "ok"]
    # A column per guidance scale swept along NFE; scales with single runs are in the table only.
    scales = sorted({r["scale"] for r in rs if len({q["nfe"] for q in rs if q["scale"] == r["scale"] and q["sampler"] == r["sampler"]}) > 1})
    samplers = sorted({r["sampler"] for r in rs})
    fig, axes = plt.subplots(2, len(scales), figsize=(max(5.2 * len(scales), 8.0), 7.5), squeeze=False, sharex=True)
    for j, w in enumerate(scales):
        for s in samplers:
            pts = sorted((r["nfe"], r["fd"], r["accuracy"]) for r in rs if r["sampler"] == s and r["scale"] == w)
            if not pts:
                continue
            x = [q[0] for q in pts]
            style = "o-" if samplers.index(s) < 10 else "s--"  # the default cycle has ten colours
            axes[0][j].plot(x, [q[1] for q in pts], style, label=s)
            axes[1][j].plot(x, [q[2] for q in pts], style, label=s)
        if o.train_test is not None:
            axes[0][j].axhline(o.train_test, color="k", ls="--", lw=1, label="train vs test (full sets)")
        if o.floor is not None:
            axes[0][j].axhline(o.floor, color="gray", ls=":", lw=1, label="data (train) subset of the run's size vs test")
        axes[0][j].set_title(f"guidance w = {w:g}  ((1+w) D_c - w D_null)")
        axes[0][j].set_xscale("log")
        axes[0][j].set_yscale("log")
        axes[0][j].set_ylabel(o.column.replace("fd_", "FD_"))
        axes[1][j].set_xscale("log")
        axes[1][j].set_ylim(0, 1)
        axes[1][j].axhline(0.8, color="r", ls=":", lw=1)
        axes[1][j].set_ylabel("class accuracy (project classifier)")
        axes[1][j].set_xlabel("NFE (denoiser evaluations per sample)")
        for ax in (axes[0][j], axes[1][j]):
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xticks([10, 20, 50])
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0][0].legend(fontsize=8)
    n = rs[0]["samples"] if rs else 0
    fig.suptitle(f"Fashion-MNIST U-Net: Frechet distance (classifier features) and class accuracy vs NFE, {n} samples per run", fontsize=10)
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    print(f"| sampler | w | steps | NFE | {o.column} | class accuracy | wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rs, key=lambda r: (r["scale"], r["sampler"], r["nfe"])):
        print(f"| {r['sampler']} | {r['scale']:g} | {r['steps']} | {r['nfe']:.0f} | {r['fd']:.2f} | {r['accuracy']:.3f} | {r['wall_time']:.0f} |")


if __name__ == "__main__":
    main()
