#!/usr/bin/python3
"""The figure, CSV and tables of the likelihood-cost sweep (experiments/likelihood_cost/sweep.toml).

Usage:
  /usr/bin/python3 experiments/likelihood_cost/figure.py RESULTS.h5 [--png FILE] [--csv FILE] [--markdown FILE]

Reads the sweep's /summary table. Top row, one panel per mixture: ll_error (mean |log p - exact| per
dimension, nats) against mean NFE per point, exact divergence, one line per solver and time variable
over its tolerances. Bottom row: ll_error against JVPs per point per evaluation, one line per trace
estimator, Dopri5 at one tight tolerance; the dashed line is the exact divergence at that tolerance
(the solver's own error, the floor an estimator cannot go below).
Needs only Debian's python3-h5py, python3-numpy and python3-matplotlib.
"""
import argparse
import csv
import re
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # headless
import h5py  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

PROBLEMS = [("edm/ring2d", "2-D ring"), ("edm/iso16", "16-D mixture (iso16)"), ("edm/diag64", "64-D mixture (diag64)")]
ESTIMATORS = ["rademacher", "gaussian", "orthogonal", "hutchpp", "rademacher_cv", "gaussian_cv"]
TARGET = 1e-3  # nats/dim: what a bits/dim table reports to two decimals


def text(value):
    return value.decode("utf-8").rstrip("\0") if isinstance(value, bytes) else str(value)


def read_runs(path):
    with h5py.File(path, "r") as f:
        s = f["summary"][()]
    runs = []
    for row in s:
        r = {name: (text(row[name]) if s.dtype[name].kind == "S" else row[name].item()) for name in s.dtype.names}
        variant = r["variant"]
        r["estimator"] = ("hutchpp" if "divergence=hutchpp" in variant else
                          re.search(r"probe=(\w+)", variant).group(1) if "divergence=hutchinson" in variant else "exact")
        if "control_variate=gaussian" in variant:
            r["estimator"] += "_cv"
        m = re.search(r"probes=(\d+)", variant)
        r["jvps"] = int(m.group(1)) if m else 0  # per point per evaluation; 0 for the exact divergence
        m = re.search(r"probe_seed=(\d+)", variant)
        r["probe_seed"] = int(m.group(1)) if m else ""
        runs.append(r)
    return runs


def exact_label(r):
    v = r["variant"]
    m = re.search(r"rho=([\d.]+)", v)
    where = (f"u = sigma~^(1/{float(m.group(1)):g})" if "time=sigma_rho" in v else
             "lambda" if r["sampler"].startswith("exponential") else "t")
    return f"{r['sampler']}, {where}"


def tex(label):
    """The plot's form of an exact_label: sigma~^(1/rho) as mathtext."""
    m = re.search(r"u = sigma~\^\(1/([\d.]+)\)", label)
    if m:
        return label.replace(m.group(0), rf"$u = \tilde\sigma^{{1/{m.group(1)}}}$")
    return label.replace(", lambda", r", $\lambda$").replace(", t", ", $t$")


def estimator_label(name):
    return {"rademacher": "Rademacher", "gaussian": "Gaussian", "orthogonal": "orthogonal frames",
            "hutchpp": "Hutch++ (2k + r JVPs)", "rademacher_cv": "Rademacher + Gaussian control variate",
            "gaussian_cv": "Gaussian + Gaussian control variate"}[name]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--png", default="results/likelihood_cost.png")
    ap.add_argument("--csv", default="results/likelihood_cost.csv")
    ap.add_argument("--markdown", default="results/likelihood_cost_sweep.md")
    args = ap.parse_args()
    runs = [r for r in read_runs(args.results) if r["status"] == "ok"]
    failed = [r for r in read_runs(args.results) if r["status"] != "ok"]

    fields = ["problem", "sampler", "variant", "estimator", "rtol", "jvps", "probe_seed", "nfe", "ll_error", "ll_bias",
              "ll_std_error", "wall_time"]
    with open(args.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in runs:
            w.writerow([r[k] if not isinstance(r[k], float) else f"{r[k]:.6g}" for k in fields])

    exact_lines = defaultdict(list)  # (problem, label) -> [(nfe, error, rtol)]
    est_runs = defaultdict(list)     # (problem, estimator, jvps) -> runs over probe seeds
    floor = {}                       # problem -> exact-divergence error at the estimators' tolerance
    est_rtol = {r["rtol"] for r in runs if r["estimator"] != "exact"}
    for r in runs:
        if r["estimator"] == "exact":
            exact_lines[(r["problem"], exact_label(r))].append((r["nfe"], r["ll_error"], r["rtol"]))
            if r["sampler"] == "dopri5" and "time=" not in r["variant"] and r["rtol"] in est_rtol:
                floor[r["problem"]] = r["ll_error"]
        else:
            est_runs[(r["problem"], r["estimator"], r["jvps"])].append(r)
    # Over probe seeds: mean error, its range, mean NFE and mean reported standard error.
    est_lines = defaultdict(list)    # (problem, estimator) -> [(jvps, error, nfe, std_error, low, high, seeds)]
    for (problem, name, jvps), rs in est_runs.items():
        e = np.array([r["ll_error"] for r in rs])
        est_lines[(problem, name)].append((jvps, e.mean(), np.mean([r["nfe"] for r in rs]),
                                           np.mean([r["ll_std_error"] for r in rs]), e.min(), e.max(), len(rs)))

    fig, axes = plt.subplots(2, len(PROBLEMS), figsize=(4.2 * len(PROBLEMS), 7.6), squeeze=False)
    exact_styles = {}
    for col, (problem, title) in enumerate(PROBLEMS):
        ax = axes[0][col]
        for (p, label), pts in sorted(exact_lines.items()):
            if p != problem:
                continue
            pts.sort()
            style = exact_styles.setdefault(label, "os^v<>"[len(exact_styles) % 6])
            ax.loglog([q[0] for q in pts], [q[1] for q in pts], marker=style, label=tex(label))
        ax.axhline(TARGET, color="grey", lw=0.8, ls=":", label="1e-3 nats/dim")
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([40, 60, 80, 100, 150, 200, 300]))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{title}: exact divergence", fontsize=10)
        ax.set_xlabel("NFE per point (mean)")
        if col == 0:
            ax.set_ylabel("mean |log p - exact| / D  (nats)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)

        ax = axes[1][col]
        for name in ESTIMATORS:
            pts = sorted(est_lines.get((problem, name), []))
            if pts:
                y = np.array([q[1] for q in pts])
                err = [y - [q[4] for q in pts], [q[5] for q in pts] - y]
                ax.errorbar([q[0] for q in pts], y, yerr=err, marker="o", capsize=2, label=estimator_label(name))
                ax.set_yscale("log")
        if problem in floor:
            ax.axhline(floor[problem], color="k", lw=0.8, ls="--", label="exact divergence (same solver)")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%d"))
        ax.set_title(f"{title}: estimated divergence", fontsize=10)
        ax.set_xlabel("JVPs per point per evaluation")
        if col == 0:
            ax.set_ylabel("mean |log p - exact| / D  (nats)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    rtol_text = ", ".join(f"{x:g}" for x in sorted(est_rtol))
    fig.suptitle("diffode likelihood under EDM, 256 points per mixture: error vs NFE (top), "
                 f"vs JVPs (bottom, Dopri5 at rtol = atol = {rtol_text}; "
                 "mean and range over probe seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.png, dpi=80)

    out = ["# Likelihood cost sweep: the numbers of likelihood_cost.png", "",
           "Generated by experiments/likelihood_cost/figure.py from the sweep experiments/likelihood_cost/sweep.toml.",
           "ll_error: mean |log p - exact| per dimension (nats) over 256 points; NFE: mean per point.", "",
           "## Exact divergence", "", "| mixture | solver, variable | rtol = atol | ll_error | NFE |", "|---|---|---:|---:|---:|"]
    for problem, _ in PROBLEMS:
        for (p, label), pts in sorted(exact_lines.items()):
            if p == problem:
                for nfe, err, rtol in sorted(pts, key=lambda q: -q[2]):
                    out.append(f"| {p.split('/')[1]} | {label} | {rtol:g} | {err:.2e} | {nfe:.1f} |")
    out += ["", f"## Estimated divergence (Dopri5, rtol = atol = {rtol_text})", "",
            "ll_error and NFE are means over the probe seeds (range of ll_error in brackets); std_error is the reported",
            "standard error per dimension, mean over points and seeds.", "",
            "| mixture | estimator | JVPs per evaluation | ll_error (range) | mean std_error | NFE |", "|---|---|---:|---:|---:|---:|"]
    for problem, _ in PROBLEMS:
        for name in ESTIMATORS:
            for jvps, err, nfe, se, low, high, seeds in sorted(est_lines.get((problem, name), [])):
                se_text = f"{se:.2e}" if se > 0 else "-"  # none with one probe (or one Hutch++ residual probe)
                out.append(f"| {problem.split('/')[1]} | {estimator_label(name)} | {jvps} | {err:.2e} ({low:.1e}..{high:.1e}) "
                           f"| {se_text} | {nfe:.1f} |")
        if problem in floor:
            out.append(f"| {problem.split('/')[1]} | exact divergence | - | {floor[problem]:.2e} | - | - |")
    if failed:
        out += ["", "Failed runs:", ""] + [f"- {r['problem']} {r['variant']}: {r['failure']}" for r in failed]
    with open(args.markdown, "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
