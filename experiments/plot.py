#!/usr/bin/python3
"""Figures and a Markdown summary from a diffode sweep results file (schema "diffode-sweep/1").

Usage:
  /usr/bin/python3 experiments/plot.py RESULTS.h5 [--out DIR] [--markdown FILE]
                                       [--by-sampler [--baseline REGEX] [--baseline-nfe N]] [--decomposition]

DIR defaults to a folder beside the file named like it without .h5 (results/quick.h5 -> results/quick/).
The Markdown summary is always printed to stdout and, with --markdown, also written to FILE.
--by-sampler adds, per problem, a figure with one panel per sampler (its grids as lines: e.g. tuned vs hand-made
grids) and a table of each variant's errors at every NFE; --baseline draws the best of the variants matching REGEX
at NFE <= N (default 10) in every panel, with 0.1 of it, and divides the table's errors by it.
--decomposition draws only, per problem, the error decomposition of a network with [model.ground_truth]: the solver's
error (error_rms), the network's (model_error_rms) and their total (total_error_rms) vs NFE, one panel per sampler,
and adds their table with the NFE from which the solver's error stays below the model's.
Needs only Debian's python3-h5py, python3-numpy and python3-matplotlib.
"""
import argparse
import math
import os
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # headless: the sweep machines have no display
import h5py  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

# Distribution metrics of sampled end points, each with the value the same statistic takes on exact draws of
# the same size: the floor below which a sampler cannot be told apart from the true law.
DISTRIBUTION_METRICS = [("nll", "nll_exact"), ("frechet", "frechet_floor"), ("energy", "energy_floor"),
                        ("weak_mean_error", "weak_mean_floor"), ("weak_cov_error", "weak_cov_floor")]
TARGET_NFE = 10.0  # the budget the summary compares samplers at: where few-step samplers are meant to be used
MAX_SAMPLE_PANELS = 6
MAX_SCATTER_POINTS = 2000  # more points only hide the density underneath


def text(value):
    """h5py gives fixed-length strings as bytes and variable-length ones as str; accept both."""
    return value.decode("utf-8", "replace").rstrip("\0") if isinstance(value, bytes) else str(value)


def read_table(f, path):
    """A compound dataset as {field: column}, string fields decoded, so rows can be filtered with plain numpy."""
    if path not in f:
        return {}
    data = f[path][()]
    table = {}
    for name in data.dtype.names:
        column = data[name]
        table[name] = np.array([text(v) for v in column], dtype=object) if column.dtype.kind in "SOU" else column
    return table


def need(table, fields, path):
    missing = [name for name in fields if name not in table]
    if missing:
        sys.exit(f"error: {path} lacks field(s) {', '.join(missing)}")


def slug(name):
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name).strip("_")


class Sweep:
    def __init__(self, path):
        self.path = path
        with h5py.File(path, "r") as f:
            self.attrs = {k: text(v) for k, v in f.attrs.items()}
            if "summary" not in f:
                sys.exit(f"error: {path} has no /summary dataset")
            self.summary = read_table(f, "summary")
            need(self.summary, ["id", "task", "problem", "variant", "steps", "stochastic", "status", "nfe"], "/summary")
            orders = read_table(f, "orders")
            self.orders = {}
            if orders:
                need(orders, ["problem", "variant", "metric", "order"], "/orders")
                for p, v, m, o in zip(orders["problem"], orders["variant"], orders["metric"], orders["order"]):
                    self.orders[(p, v, m)] = float(o)
            self.mixtures = {}
            for name, group in _walk_groups(f.get("mixtures")):
                self.mixtures[name] = {"weights": group["weights"][()].ravel(), "means": group["means"][()],
                                       "variances": group["variances"][()],
                                       "alpha": float(group.attrs.get("alpha_end", 1.0)),
                                       "sigma": float(group.attrs.get("sigma_end", 0.0))}
            runs = f.get("runs")
            self.runs_with_samples = {rid for rid in (runs.keys() if runs else []) if "samples" in runs[rid]}
        self.problems = sorted(set(self.summary["problem"]))

    def rows(self, problem, task=None, stochastic=None):
        mask = self.summary["problem"] == problem
        if task is not None:
            mask &= self.summary["task"] == task
        if stochastic is not None:
            mask &= self.summary["stochastic"].astype(bool) == stochastic
        return np.nonzero(mask)[0]

    def order(self, problem, variant, metric):
        return self.orders.get((problem, variant, metric), float("nan"))

    def samples(self, run_id):
        with h5py.File(self.path, "r") as f:
            return f[f"runs/{run_id}/samples"][()]


def _walk_groups(group, prefix=""):
    """Problem names contain '/' ("edm/iso16"), so /mixtures/<problem> is nested: yield the groups holding data."""
    if group is None:
        return
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            name = f"{prefix}{key}"
            if "weights" in item:
                yield name, item
            else:
                yield from _walk_groups(item, name + "/")


def curves(sweep, rows, metric, x="nfe", line_of=None):
    """{line: [(x, y, rows)]} for ok runs, averaged over seeds at each step count (and tolerance), sorted by x.

    A line is the variant unless line_of maps a row to another name. Seeds are averaged because a line per seed
    would bury the trend; failed runs and NaN points are left out.
    """
    s = sweep.summary
    rtol = s["rtol"] if "rtol" in s else np.full(len(s["nfe"]), np.nan)
    groups = defaultdict(list)
    for i in rows:
        if s["status"][i] == "ok" and metric in s and np.isfinite(s[metric][i]) and np.isfinite(s[x][i]):
            line = line_of(i) if line_of else s["variant"][i]
            groups[(line, int(s["steps"][i]), float(rtol[i]) if np.isfinite(rtol[i]) else None)].append(i)
    by_line = defaultdict(list)
    for (line, _, _), idx in groups.items():
        by_line[line].append((np.mean(s[x][idx]), np.mean(s[metric][idx]), idx))
    return {line: sorted(points, key=lambda p: p[0]) for line, points in by_line.items()}


def without_rtol(sweep):
    """Adaptive likelihood solvers converge along the tolerance, not the step count, but the tolerance is part of
    the variant: drop a "rtol..." word from the variant so each solver's tolerances join into one line."""
    s = sweep.summary

    def line_of(i):
        if "rtol" not in s or not np.isfinite(s["rtol"][i]):
            return s["variant"][i]
        words = [w for w in s["variant"][i].split() if not w.lower().startswith("rtol")]
        return " ".join(words) + " (rtol sweep)"
    return line_of


class Styles:
    """One colour and marker per variant, shared by every figure of a problem so lines can be followed across.

    Stochastic variants are dotted so they stand apart in the figures that mix both kinds (floors are dashed)."""

    def __init__(self, stochastic_by_variant):
        # tab10 first: tab20 alone puts light/dark pairs of one hue next to each other, and neighbours in sorted
        # order are usually siblings (dpm_solver_pp_2m / _3m) that must be told apart.
        colours = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("tab20").colors[1::2])
        markers = "osD^v<>pPXh*"
        self.style = {v: (colours[i % len(colours)], markers[i % len(markers)], ":" if stochastic_by_variant[v] else "-")
                      for i, v in enumerate(sorted(stochastic_by_variant))}

    def __call__(self, variant):
        return self.style.get(variant, ("black", "o", "-"))


def failed_count(sweep, rows):
    return int(np.sum(sweep.summary["status"][rows] != "ok"))


def label(sweep, problem, variant, order_metric):
    order = sweep.order(problem, variant, order_metric) if order_metric else float("nan")
    return f"{variant} (slope {order:.2f})" if np.isfinite(order) else variant


def draw_lines(ax, sweep, problem, rows, metric, styles, x="nfe", order_metric=None, yerr_metric=None, loglog=True,
               line_of=None):
    """One line per variant; returns how many lines were drawn. Error bars only where the spread is nonzero."""
    drawn = 0
    for variant, points in sorted(curves(sweep, rows, metric, x, line_of).items()):
        xs = np.array([p[0] for p in points])
        ys = np.array([p[1] for p in points])
        keep = (xs > 0) & (ys > 0) if loglog else np.ones_like(xs, dtype=bool)
        if not keep.any():
            continue
        colour, marker, linestyle = styles(variant)
        kwargs = dict(color=colour, marker=marker, linestyle=linestyle, markersize=4, linewidth=1.2,
                      label=label(sweep, problem, variant, order_metric))
        errs = np.array([np.mean(sweep.summary[yerr_metric][p[2]]) for p in points]) if yerr_metric else None
        if errs is not None and np.nanmax(np.nan_to_num(errs[keep])) > 0:
            errs = np.nan_to_num(errs[keep])
            # On a log axis a bar reaching zero or below cannot be drawn: clip its lower half just above zero.
            lower = np.minimum(errs, 0.999 * ys[keep]) if loglog else errs
            ax.errorbar(xs[keep], ys[keep], yerr=[lower, errs], capsize=2, **kwargs)
        else:
            ax.plot(xs[keep], ys[keep], **kwargs)
        drawn += 1
    if loglog:
        ax.set_yscale("log")
    ax.set_xscale("log")
    if x == "nfe":
        # Step counts double along the grid: powers of two as plain numbers read better than a lone "10^1".
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=2))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    return drawn


def finish(fig, axes, path, title, failed, written, legend_axes=None):
    """Title carries the failure count so a short line is not mistaken for a converged one."""
    if failed:
        title += f"  [{failed} failed run(s) left out]"
    fig.suptitle(title, fontsize=11)
    handles, labels = {}, []
    for ax in (legend_axes or axes):
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in handles:
                handles[l] = h
                labels.append(l)
    if labels:
        # Outside the axes: with a dozen variants an inside legend covers the lines.
        fig.legend([handles[l] for l in labels], labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)
    print(f"wrote {path} ({failed} failed run(s) left out)", file=sys.stderr)


def any_finite(sweep, rows, metric):
    s = sweep.summary
    return metric in s and bool(np.any(np.isfinite(s[metric][rows]) & (s["status"][rows] == "ok")))


def plot_convergence(sweep, problem, styles, out, written):
    """Figures 1 and 2: error vs NFE, and error vs wall time (work-precision)."""
    # The medians beside the RMS: on a mixture the RMS is dominated by the few samples that switch
    # basins, and falls at about half the order the median shows.
    kinds = [(False, "error_rms", "error vs NFE", "error_nfe"), (True, "strong_error", "strong error vs NFE", "strong_error_nfe"),
             (False, "error_median", "median error vs NFE", "error_median_nfe"),
             (True, "strong_error_median", "median strong error vs NFE", "strong_error_median_nfe")]
    work = []
    for stochastic, metric, title, name in kinds:
        rows = sweep.rows(problem, "sample", stochastic)
        if not any_finite(sweep, rows, metric):
            continue
        if any_finite(sweep, rows, "wall_time") and "median" not in metric:
            work.append((stochastic, metric))
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        draw_lines(ax, sweep, problem, rows, metric, styles, order_metric=metric)
        ax.set_xlabel("NFE")
        ax.set_ylabel(metric)
        finish(fig, [ax], os.path.join(out, f"{slug(problem)}_{name}.png"), f"{problem}: {title} ({metric})",
               failed_count(sweep, rows), written)
    if not work:
        return
    fig, axes = plt.subplots(1, len(work), figsize=(5.6 * len(work), 4.6), squeeze=False)
    rows_all = sweep.rows(problem, "sample")
    for ax, (stochastic, metric) in zip(axes[0], work):
        draw_lines(ax, sweep, problem, sweep.rows(problem, "sample", stochastic), metric, styles, x="wall_time",
                   order_metric=metric)
        ax.set_xlabel("wall time [s]")
        ax.set_ylabel(metric)
        ax.set_title(metric, fontsize=10)
    finish(fig, list(axes[0]), os.path.join(out, f"{slug(problem)}_work_precision.png"),
           f"{problem}: work-precision", failed_count(sweep, rows_all), written)


def plot_distribution(sweep, problem, styles, out, written):
    """Figure 3: distribution metrics vs NFE against the value exact draws of the same size reach."""
    rows = sweep.rows(problem, "sample")
    metrics = [(m, fl) for m, fl in DISTRIBUTION_METRICS if any_finite(sweep, rows, m)]
    if not metrics:
        return
    s = sweep.summary
    ok = rows[s["status"][rows] == "ok"]
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 4.0 * nrows), squeeze=False)
    for ax, (metric, floor_name) in zip(axes.flat, metrics):
        values = s[metric][ok]
        floors = s[floor_name][ok] if floor_name in s else np.array([np.nan])
        floors = floors[np.isfinite(floors)]
        # nll is a level, not a distance (its floor is nll_exact, not 0, and it can be negative), so it stays linear.
        positive = metric != "nll" and np.all(values[np.isfinite(values)] > 0) and np.all(floors > 0)
        draw_lines(ax, sweep, problem, rows, metric, styles, loglog=False)
        if positive:
            ax.set_yscale("log")
        if floors.size:
            # Floors come from exact draws of the run's sample count, so they agree up to Monte Carlo noise; the
            # median is the level to beat.
            ax.axhline(np.median(floors), color="black", linestyle="--", linewidth=1.0,
                       label="exact draws (floor)")
        ax.set_xlabel("NFE")
        ax.set_ylabel(metric)
        ax.set_title(metric, fontsize=10)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    finish(fig, list(axes.flat[:len(metrics)]), os.path.join(out, f"{slug(problem)}_distribution.png"),
           f"{problem}: sample distribution vs NFE (dashed: exact draws)", failed_count(sweep, rows), written)


def plot_likelihood(sweep, problem, out, written):
    """Figure 4: log-likelihood error vs NFE, one line per fixed-step variant or per adaptive solver."""
    rows = sweep.rows(problem, "likelihood")
    if not any_finite(sweep, rows, "ll_error"):
        return
    line_of = without_rtol(sweep)
    styles = Styles({line_of(i): False for i in rows})
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    draw_lines(ax, sweep, problem, rows, "ll_error", styles, order_metric="ll_error", line_of=line_of,
               yerr_metric="ll_std_error" if "ll_std_error" in sweep.summary else None)
    ax.set_xlabel("NFE")
    ax.set_ylabel("ll_error [nats/dim]")
    finish(fig, [ax], os.path.join(out, f"{slug(problem)}_likelihood.png"),
           f"{problem}: log-likelihood error vs NFE (bars: Hutchinson std. error)", failed_count(sweep, rows), written)


def mixture_log_density(mix, points):
    """log p_end at points: the t=0 diagonal mixture pushed through x = alpha x0 + sigma eps."""
    a, sg = mix["alpha"], mix["sigma"]
    means = a * mix["means"]
    variances = a * a * mix["variances"] + sg * sg
    diff = points[:, None, :] - means[None, :, :]
    log_comp = -0.5 * np.sum(diff ** 2 / variances + np.log(2 * np.pi * variances), axis=2)
    log_comp += np.log(mix["weights"])[None, :]
    peak = log_comp.max(axis=1, keepdims=True)
    return peak[:, 0] + np.log(np.sum(np.exp(log_comp - peak), axis=1))


def pick_sample_runs(sweep, problem):
    """Lowest- and highest-NFE runs of a few variants spread through the sorted list, so the panels show both
    a starved and a converged sampler of different kinds."""
    s = sweep.summary
    by_variant = defaultdict(list)
    for i in sweep.rows(problem, "sample"):
        if s["status"][i] == "ok" and s["id"][i] in sweep.runs_with_samples:
            by_variant[s["variant"][i]].append(i)
    variants = sorted(by_variant)
    chosen_variants = [variants[int(round(k))] for k in
                       np.linspace(0, len(variants) - 1, min(len(variants), MAX_SAMPLE_PANELS // 2))] if variants else []
    picks = []
    for v in dict.fromkeys(chosen_variants):
        idx = sorted(by_variant[v], key=lambda i: s["nfe"][i])
        picks.extend(dict.fromkeys([idx[0], idx[-1]]))
    return picks[:MAX_SAMPLE_PANELS]


def plot_samples(sweep, problem, out, written):
    """Figure 5: end samples of a few runs over the exact end-time density, for 2-D mixtures."""
    # The writer may nest "edm/iso16" as groups or flatten the '/' away; accept either spelling.
    mix = sweep.mixtures.get(problem) or next((m for name, m in sweep.mixtures.items() if slug(name) == slug(problem)), None)
    if mix is None or mix["means"].ndim != 2 or mix["means"].shape[1] != 2:
        return
    picks = pick_sample_runs(sweep, problem)
    if not picks:
        return
    s = sweep.summary
    clouds = [sweep.samples(s["id"][i]) for i in picks]
    # Frame: the density's mass (means +- 3.5 sd) plus the bulk of the samples, so outliers do not shrink the view.
    sd = np.sqrt(mix["alpha"] ** 2 * mix["variances"] + mix["sigma"] ** 2)
    lo = (mix["alpha"] * mix["means"] - 3.5 * sd).min(axis=0)
    hi = (mix["alpha"] * mix["means"] + 3.5 * sd).max(axis=0)
    for c in clouds:
        lo = np.minimum(lo, np.percentile(c[:, :2], 0.5, axis=0))
        hi = np.maximum(hi, np.percentile(c[:, :2], 99.5, axis=0))
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    density = np.exp(mixture_log_density(mix, np.column_stack([gx.ravel(), gy.ravel()]))).reshape(gx.shape)
    ncols = min(3, len(picks))
    nrows = math.ceil(len(picks) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 4.0 * nrows), squeeze=False)
    rng = np.random.default_rng(0)  # fixed, so reruns give identical figures
    for ax, i, cloud in zip(axes.flat, picks, clouds):
        ax.imshow(density, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="Blues", aspect="auto")
        ax.contour(gx, gy, density, levels=6, colors="steelblue", linewidths=0.5)
        if len(cloud) > MAX_SCATTER_POINTS:
            cloud = cloud[rng.choice(len(cloud), MAX_SCATTER_POINTS, replace=False)]
        ax.scatter(cloud[:, 0], cloud[:, 1], s=3, color="orangered", alpha=0.5, linewidths=0)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        detail = f"NFE {s['nfe'][i]:.0f}"
        if "energy" in s and np.isfinite(s["energy"][i]):
            detail += f", energy {s['energy'][i]:.3g}"
        ax.set_title(f"{s['variant'][i]}\n{detail}", fontsize=9)
    for ax in axes.flat[len(picks):]:
        ax.set_visible(False)
    title = f"{problem}: samples over exact density (alpha={mix['alpha']:.3g}, sigma={mix['sigma']:.3g})"
    finish(fig, [], os.path.join(out, f"{slug(problem)}_samples.png"), title, 0, written)


def best_near_target(sweep, rows, metric, floor=None):
    """Per variant, the seed-averaged point closest to TARGET_NFE in log distance; sorted best first.

    With a floor the error is |metric - floor| (nll below the exact draws' is mode collapse, not accuracy)."""
    table = []
    for variant, points in curves(sweep, rows, metric).items():
        nfe, value, idx = min(points, key=lambda p: abs(math.log(max(p[0], 1e-300) / TARGET_NFE)))
        if floor:
            floor_value = np.nanmean(sweep.summary[floor][idx]) if floor in sweep.summary else float("nan")
            if not np.isfinite(floor_value):
                continue
            value = abs(value - floor_value)
        table.append((value, variant, nfe))
    return sorted(table)


ORDER_METRICS = ("error_rms", "error_median", "strong_error", "strong_error_median", "ll_error")


def orders_table(sweep, problem):
    """Every fitted order of the problem (/orders), one row per variant, one column per metric."""
    variants = sorted({variant for (p, variant, _) in sweep.orders if p == problem})
    metrics = [m for m in ORDER_METRICS if any((problem, v, m) in sweep.orders for v in variants)]
    if not variants:
        return []
    lines = ["### Fitted orders along the steps axis (every variant)", "",
             "| variant | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for variant in variants:
        cells = [f"{sweep.order(problem, variant, m):.2f}" if np.isfinite(sweep.order(problem, variant, m)) else "-" for m in metrics]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines + [""]


def baseline_of(sweep, problem, pattern, max_nfe):
    """(error_rms, error_median, variant, nfe): the lowest seed-averaged error_rms among the deterministic variants
    whose name matches pattern, over their points at NFE <= max_nfe; None when none matches."""
    rows = sweep.rows(problem, "sample", False)
    medians = curves(sweep, rows, "error_median")
    best = None
    for variant, points in curves(sweep, rows, "error_rms").items():
        if not re.search(pattern, variant):
            continue
        for k, (nfe, value, _) in enumerate(points):
            if nfe <= max_nfe + 1e-9 and (best is None or value < best[0]):
                median = medians[variant][k][1] if variant in medians and len(medians[variant]) == len(points) else float("nan")
                best = (value, median, variant, nfe)
    return best


def sampler_groups(sweep, problem):
    """{sampler: rows} of the deterministic runs, for the samplers run with two or more variants (e.g. grids)."""
    s = sweep.summary
    rows = sweep.rows(problem, "sample", False)
    groups = defaultdict(list)
    for i in rows:
        groups[s["sampler"][i] if "sampler" in s else s["variant"][i].split()[0]].append(i)
    return {name: np.array(idx) for name, idx in sorted(groups.items()) if len(set(s["variant"][idx])) >= 2}


def plot_by_sampler(sweep, problem, out, written, baseline):
    """Error vs NFE, one column per sampler (RMS above, median below), its variants (grids) as lines, and the
    baseline with 0.1 of it as horizontal lines."""
    groups = sampler_groups(sweep, problem)
    if not groups:
        return
    s = sweep.summary
    fig, axes = plt.subplots(2, len(groups), figsize=(5.2 * len(groups), 8.4), squeeze=False)
    for col, (name, idx) in enumerate(groups.items()):
        styles = Styles({v: False for v in set(s["variant"][idx])})
        for row, metric in enumerate(("error_rms", "error_median")):
            ax = axes[row][col]
            draw_lines(ax, sweep, problem, idx, metric, styles)
            if baseline:
                value = baseline[0] if metric == "error_rms" else baseline[1]
                if np.isfinite(value):
                    ax.axhline(value, color="black", linestyle="--", linewidth=1.0,
                               label=f"baseline: {baseline[2]} at NFE {baseline[3]:g}")
                    if metric == "error_rms":
                        ax.axhline(0.1 * value, color="black", linestyle=":", linewidth=1.0, label="0.1 x baseline")
            for line in ax.get_lines():  # listed grids (tuned ones) stand out from the schedules
                if " hdf5" in line.get_label() or " file" in line.get_label():
                    line.set_linewidth(2.6)
            nfes = sorted({float(v) for v in s["nfe"][idx] if np.isfinite(v)})
            ax.set_xticks(nfes)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.set_xlabel("NFE")
            ax.set_ylabel(metric)
            ax.set_title(f"{name}: {metric}", fontsize=10)
        handles = {}
        for ax in (axes[0][col], axes[1][col]):
            for h, l in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(l, h)
        axes[1][col].legend(list(handles.values()), list(handles.keys()), loc="upper center", bbox_to_anchor=(0.5, -0.16),
                            fontsize=7)
    finish(fig, [], os.path.join(out, f"{slug(problem)}_by_sampler.png"),
           f"{problem}: error vs NFE per sampler and grid", failed_count(sweep, sweep.rows(problem, "sample", False)), written)


def by_sampler_table(sweep, problem, baseline, pattern, max_nfe):
    """Every variant of the samplers run on several grids: error_rms / error_median at each NFE, and the RMS over
    the baseline's."""
    groups = sampler_groups(sweep, problem)
    if not groups:
        return []
    lines = ["### Errors by sampler and grid (error_rms / error_median; seeds averaged)", ""]
    if baseline:
        lines += [f"Baseline: the best variant matching `{pattern}` at NFE <= {max_nfe:g}: **{baseline[2]}**, error_rms "
                  f"{baseline[0]:.4g} (median {baseline[1]:.4g}) at NFE {baseline[3]:g}. In brackets: error_rms / baseline.", ""]
    s = sweep.summary
    for name, idx in groups.items():
        rms = curves(sweep, idx, "error_rms")
        median = curves(sweep, idx, "error_median")
        nfes = sorted({round(p[0], 6) for points in rms.values() for p in points})
        lines += [f"| {name} | " + " | ".join(f"NFE {n:g}" for n in nfes) + " |", "|---|" + "---:|" * len(nfes)]
        for variant in sorted(rms):
            cells = []
            by_nfe = {round(p[0], 6): p[1] for p in rms[variant]}
            med = {round(p[0], 6): p[1] for p in median.get(variant, [])}
            for n in nfes:
                if n not in by_nfe:
                    cells.append("")
                    continue
                cell = f"{by_nfe[n]:.4g} / {med.get(n, float('nan')):.4g}"
                if baseline:
                    cell += f" ({by_nfe[n] / baseline[0]:.3g})"
                cells.append(cell)
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


DECOMPOSITION = (("error_rms", "solver", "-"), ("model_error_rms", "model", ":"), ("total_error_rms", "total", "--"))


def decomposition_groups(sweep, problem):
    """{variant: rows} of the deterministic runs with a model error (a network with a ground truth)."""
    s = sweep.summary
    if "model_error_rms" not in s:
        return {}
    groups = defaultdict(list)
    for i in sweep.rows(problem, "sample", False):
        if s["status"][i] == "ok" and np.isfinite(s["model_error_rms"][i]):
            groups[s["variant"][i]].append(i)
    return {v: np.array(idx) for v, idx in sorted(groups.items())}


def crossing_nfe(sweep, idx):
    """The smallest NFE from which on the solver's error stays below the model's (None: never within the sweep)."""
    s = sweep.summary
    points = sorted((float(s["nfe"][i]), float(s["error_rms"][i]), float(s["model_error_rms"][i])) for i in idx)
    for k, (nfe, _, _) in enumerate(points):
        if all(solver < model for _, solver, model in points[k:]):
            return nfe
    return None


def plot_decomposition(sweep, problem, out, written):
    """The error decomposition of a network: solver, model and total error vs NFE, one panel per sampler."""
    groups = decomposition_groups(sweep, problem)
    if not groups:
        return
    s = sweep.summary
    # At most six panels a row: a sweep of every deterministic sampler has some thirty.
    ncols = min(len(groups), 6)
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 4.0 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, (variant, idx) in zip(axes.flat, groups.items()):
        order = idx[np.argsort(s["nfe"][idx])]
        for (metric, name, linestyle), colour in zip(DECOMPOSITION, ("C0", "C3", "black")):
            ax.plot(s["nfe"][order], s[metric][order], linestyle=linestyle, marker="o", markersize=3.5, color=colour,
                    label=f"{name} ({metric})")
        crossing = crossing_nfe(sweep, idx)
        if crossing is not None:
            ax.axvline(crossing, color="grey", linewidth=0.8, alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(sorted({float(v) for v in s["nfe"][idx]}))
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("NFE")
        ax.set_title(variant + (f"\nsolver < model from NFE {crossing:g}" if crossing is not None else ""), fontsize=9)
    for row in axes:
        row[0].set_ylabel("RMS distance")
    finish(fig, [axes[0][0]], os.path.join(out, f"{slug(problem)}_decomposition.png"),
           f"{problem}: solver, model and total error vs NFE", failed_count(sweep, sweep.rows(problem, "sample", False)),
           written)


def decomposition_table(sweep, problem):
    groups = decomposition_groups(sweep, problem)
    if not groups:
        return []
    s = sweep.summary
    lines = ["### Error decomposition (RMS; median in brackets)", "",
             "solver: against the network's own tight PF-ODE solve; model: the network's tight solve against the exact "
             "mixture's; total: against the exact mixture's. All from the same x_T.", "",
             "| variant | steps | NFE | solver | model | total |", "|---|---:|---:|---:|---:|---:|"]
    for variant, idx in groups.items():
        for i in idx[np.argsort(s["nfe"][idx])]:
            cell = lambda m: f"{s[m + '_rms'][i]:.3g} ({s[m + '_median'][i]:.3g})"
            lines.append(f"| {variant} | {int(s['steps'][i])} | {s['nfe'][i]:g} | {cell('error')} | {cell('model_error')} | "
                         f"{cell('total_error')} |")
    lines += ["", "| variant | solver error below model error from NFE |", "|---|---:|"]
    for variant, idx in groups.items():
        crossing = crossing_nfe(sweep, idx)
        lines.append(f"| {variant} | {crossing:g} |" if crossing is not None else f"| {variant} | not within the sweep |")
    lines.append("")
    return lines


def markdown(sweep, md_dir, written, top=None, by_sampler=None, decomposition=False):
    """The summary tables, every variant in full (top=N keeps the N best of each)."""
    lines = [f"# Sweep {sweep.attrs.get('name', os.path.basename(sweep.path))}", ""]
    for key in ("commit", "start_time", "finished"):
        if key in sweep.attrs:
            lines.append(f"- {key}: `{sweep.attrs[key]}`")
    lines.append("")
    for problem in sweep.problems:
        lines += [f"## {problem}", ""]
        n_failed = failed_count(sweep, sweep.rows(problem))
        if n_failed:
            lines += [f"{n_failed} failed run(s) left out.", ""]
        sections = [(False, "error_rms", None, "error_rms", "error_rms", "Deterministic samplers (error_rms vs tight PF-ODE solve)")]
        # Stochastic runs have no pathwise reference with the same noise at low NFE; judge the distribution.
        stochastic_rows = sweep.rows(problem, "sample", True)
        if any_finite(sweep, stochastic_rows, "energy"):
            sections.append((True, "energy", None, "strong_error", "energy", "Stochastic samplers (energy distance)"))
        else:
            sections.append((True, "nll", "nll_exact", "strong_error", "|nll - nll_exact|",
                             "Stochastic samplers (|nll - nll_exact|)"))
        for stochastic, metric, floor, order_metric, error_name, heading in sections:
            best = best_near_target(sweep, sweep.rows(problem, "sample", stochastic), metric, floor)
            if not best:
                continue
            lines += [f"### {heading}, NFE closest to {TARGET_NFE:g}", "",
                      "| variant | NFE | error | fitted order |", "|---|---:|---:|---:|"]
            for value, variant, nfe in best[:top]:
                order = sweep.order(problem, variant, order_metric)
                lines.append(f"| {variant} | {nfe:.0f} | {value:.3g} | {order:.2f} |" if np.isfinite(order)
                             else f"| {variant} | {nfe:.0f} | {value:.3g} | - |")
            value, variant, nfe = best[0]
            kind = "stochastic" if stochastic else "deterministic"
            lines += ["", f"Most accurate {kind} sampler at ~{TARGET_NFE:g} NFE on {problem}: **{variant}** "
                          f"({error_name} {value:.3g} at NFE {nfe:.0f}).", ""]
        best = best_near_target(sweep, sweep.rows(problem, "likelihood"), "ll_error")
        if best:
            # Adaptive solvers give one NFE per tolerance, so "closest to 10" is just each variant's cheapest-fitting run.
            lines += [f"### Likelihood (ll_error, nats/dim), each variant's run with NFE closest to {TARGET_NFE:g}", "",
                      "| variant | NFE | ll_error | fitted order |", "|---|---:|---:|---:|"]
            for value, variant, nfe in best[:top]:
                order = sweep.order(problem, variant, "ll_error")
                lines.append(f"| {variant} | {nfe:.0f} | {value:.3g} | " + (f"{order:.2f} |" if np.isfinite(order) else "- |"))
            lines.append("")
        lines += orders_table(sweep, problem)
        if decomposition:
            lines += decomposition_table(sweep, problem)
        if by_sampler is not None:
            lines += by_sampler_table(sweep, problem, by_sampler["baselines"].get(problem), by_sampler["pattern"],
                                      by_sampler["nfe"])
        for path in written.get(problem, []):
            rel = os.path.relpath(path, md_dir).replace(os.sep, "/")
            lines.append(f"![{os.path.basename(path)}]({rel})")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description="Plot a diffode sweep results file.")
    parser.add_argument("results", help="sweep results file (.h5)")
    parser.add_argument("--out", help="folder for the PNGs (default: beside RESULTS, named like it without .h5)")
    parser.add_argument("--markdown", help="also write the Markdown summary to this file")
    parser.add_argument("--by-sampler", action="store_true",
                        help="per problem, a figure with a panel per sampler run on several grids, and a table of its errors")
    parser.add_argument("--baseline", help="with --by-sampler: a regex on variant names; their best error at NFE <= "
                                           "--baseline-nfe is drawn and divides the table's errors")
    parser.add_argument("--decomposition", action="store_true",
                        help="only the error decomposition of a network with a ground truth: solver, model and total "
                             "error vs NFE per sampler, and its table")
    parser.add_argument("--baseline-nfe", type=float, default=TARGET_NFE, help="the baseline's NFE budget (default 10)")
    args = parser.parse_args()
    if not os.path.isfile(args.results):
        sys.exit(f"error: no such file {args.results}")
    out = args.out or os.path.splitext(args.results)[0]
    os.makedirs(out, exist_ok=True)
    sweep = Sweep(args.results)
    written = {}
    by_sampler = None
    if args.by_sampler:
        by_sampler = {"pattern": args.baseline, "nfe": args.baseline_nfe,
                      "baselines": {p: baseline_of(sweep, p, args.baseline, args.baseline_nfe) if args.baseline else None
                                    for p in sweep.problems}}
    for problem in sweep.problems:
        figures = written.setdefault(problem, [])
        # Sampler variants only: likelihood lines never share a figure with them and would use up the palette.
        rows = sweep.rows(problem, "sample")
        styles = Styles(dict(zip(sweep.summary["variant"][rows], sweep.summary["stochastic"][rows].astype(bool))))
        if args.decomposition:
            plot_decomposition(sweep, problem, out, figures)
            continue
        plot_convergence(sweep, problem, styles, out, figures)
        plot_distribution(sweep, problem, styles, out, figures)
        plot_likelihood(sweep, problem, out, figures)
        plot_samples(sweep, problem, out, figures)
        if by_sampler:
            plot_by_sampler(sweep, problem, out, figures, by_sampler["baselines"][problem])
    md_dir = os.path.dirname(os.path.abspath(args.markdown)) if args.markdown else os.getcwd()
    summary = markdown(sweep, md_dir, {k: [os.path.abspath(p) for p in v] for k, v in written.items()}, by_sampler=by_sampler,
                       decomposition=args.decomposition)
    print(summary)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(summary + "\n")


if __name__ == "__main__":
    main()
