"""PNG plots of an evaluate() result. matplotlib loads here, on use, with the Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics
from .errors import AnimefaceError


def write_plots(result: dict, folder) -> list[Path]:
    """Confusion matrix, known-vs-stranger ROC, score histograms, reliability diagram and accuracy against coverage."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AnimefaceError("plots need matplotlib: pip install matplotlib (or the [plots] extra)") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = result["records"]
    title = f"{Path(result['root']).name}: {result['shots']} shots, {result['backbone']}"
    written = []
    for name, draw in (("confusion.png", _confusion), ("roc_unknown.png", _roc), ("scores.png", _scores),
                       ("reliability.png", _reliability), ("accuracy_coverage.png", _coverage)):
        fig = draw(plt, result, records, title)
        if fig is not None:
            fig.savefig(folder / name, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(folder / name)
    return written


def _confusion(plt, result, records, title):
    """Rows: true character (strangers pooled in one row); columns: the answer, or unknown."""
    names = [n for n, row in result["per_class"].items() if row["n"]]
    rows = names + (["(stranger)"] if result["n_test_strangers"] else [])
    cols = names + ["unknown"]
    counts = np.zeros((len(rows), len(cols)))
    for r in records:
        i = rows.index(r["truth"]) if r["truth"] is not None else len(rows) - 1
        j = cols.index(r["answer"]) if r["answer"] is not None else len(cols) - 1
        counts[i, j] += 1
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.38 * len(cols) + 2)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("answer")
    ax.set_ylabel("true character")
    if len(cols) <= 25:
        for i in range(len(rows)):
            for j in range(len(cols)):
                if round(100 * share[i, j]) >= 1:
                    ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ax.set_title(f"Confusion (% of each row)\n{title}; top-1 {100 * result['top1']:.1f}%", fontsize=10)
    return fig


def _roc(plt, result, records, title):
    pos = [r["margin"] for r in records if r["truth"] is not None]
    neg = [r["margin"] for r in records if r["truth"] is None]
    if not pos or not neg:
        return None
    fpr, tpr = metrics.roc_curve(pos, neg)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(fpr, tpr, lw=2, label=f"top name's probability, AUROC {metrics.auroc(pos, neg):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    op_fpr = np.mean(np.asarray(neg) >= 0)
    op_tpr = np.mean(np.asarray(pos) >= 0)
    ax.plot([op_fpr], [op_tpr], "o", color="red", label="the threshold")
    ax.set_xlabel("strangers accepted (false-positive rate)")
    ax.set_ylabel("known characters accepted (true-positive rate)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Known vs stranger\n{title}", fontsize=10)
    return fig


def _scores(plt, result, records, title):
    """The top name's probability for genuine (right top guess), impostor (wrong top guess of a
    known character) and stranger faces, with the threshold."""
    groups = {
        "genuine": [r for r in records if r["top"] is not None and r["truth"] is not None and r["top"] == r["truth"]],
        "impostor": [r for r in records if r["top"] is not None and r["truth"] is not None and r["top"] != r["truth"]],
        "stranger": [r for r in records if r["top"] is not None and r["truth"] is None],
    }
    colours = {"genuine": "tab:green", "impostor": "tab:orange", "stranger": "tab:red"}
    threshold = result["threshold"]["probability"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    bins = np.linspace(0, 1, 41)
    for name, group in groups.items():
        if group:
            ax.hist([r["probability"] for r in group], bins=bins, density=True, histtype="stepfilled", alpha=0.35,
                    color=colours[name], edgecolor=colours[name], label=f"{name} ({len(group)})")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("probability that the top name is right")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(f"Scores by kind of face\n{title}", fontsize=10)
    return fig


def _reliability(plt, result, records, title):
    """Reliability diagram: per probability bin, the share of top names that were right."""
    rows = result["reliability"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.bar([(r["low"] + r["high"]) / 2 for r in rows], [r["accuracy"] for r in rows], width=0.09, alpha=0.6,
           color="tab:blue", edgecolor="tab:blue", label="share right (strangers count as wrong)")
    ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o", color="black", ms=4,
            label="mean probability of the bin")
    for r in rows:
        ax.text((r["low"] + r["high"]) / 2, min(r["accuracy"] + 0.02, 0.97), str(r["n"]), ha="center", fontsize=6)
    ax.set_xlabel("probability that the top name is right")
    ax.set_ylabel("share of top names that were right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="upper left", fontsize=8)
    ece = result.get("calibration_error")
    ax.set_title(f"Reliability (expected calibration error {ece:.3f}; count per bin)\n{title}"
                 if ece is not None else f"Reliability\n{title}", fontsize=10)
    return fig


def _coverage(plt, result, records, title):
    from .evaluate import accuracy_coverage_curve

    coverage, accuracy = accuracy_coverage_curve(records)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(coverage, accuracy, lw=2, label="all test pictures (a stranger answered is wrong)")
    op = next(row for row in result["accuracy_coverage"] if row.get("operating_point"))
    if op["accuracy"] is not None:
        ax.plot([op["coverage"]], [op["accuracy"]], "o", color="red", label="the threshold")
    ax.set_xlabel("coverage (share of pictures given a name)")
    ax.set_ylabel("accuracy of the names given")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Accuracy against coverage\n{title}", fontsize=10)
    return fig
