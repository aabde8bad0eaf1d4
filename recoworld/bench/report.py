"""The bench's files: `results.json`, `leaderboard.md` and the quadrant plot `quadrant.png`.

`results.json` holds no clock time or path that changes between runs, so the same
scenarios, agents and seeds give the same file (tested).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recoworld.agents import agent_labels
from recoworld.bench.metrics import METRICS
from recoworld.storage import write_bytes_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from recoworld.bench.runner import BenchResult

RESULTS, LEADERBOARD, QUADRANT = "results.json", "leaderboard.md", "quadrant.png"


def results_dict(result: BenchResult) -> dict[str, Any]:
    import recoworld

    k = result.offline_config.k
    return {
        "recoworld": recoworld.__version__,
        "agents": agent_labels(result.agents),  # as the scenarios' and offline tables name them
        "scenarios": {
            run.scenario.name: {
                "version": run.scenario.version,
                "seed": run.scenario.seed,
                "config_hash": run.config_hash,
                "description": run.scenario.description,
                "kind": run.scenario.kind,
                "n_users": run.n_users,
                "metrics_order": run.scenario.metrics,
                "folder": run.out.name,
                "notes": run.notes,
                "metrics": run.metrics,
            }
            for run in result.runs
        },
        "offline": {
            "metric": f"ndcg@{k}",
            "protocol": "held-out interactions of recoworld.data.reference_log, each recommender acting once per "
                        "user on its history; the slate's order is its top-k ranking",
            "config": result.offline_config.model_dump(mode="json"),
            "seed": result.offline_config.seed,
            "agents": result.offline,
        },
    }


def write_outputs(result: BenchResult, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = results_dict(result)
    write_bytes_atomic((json.dumps(data, indent=2, allow_nan=False) + "\n").encode(), out / RESULTS)
    write_bytes_atomic(leaderboard(data).encode(), out / LEADERBOARD)
    quadrant_plot(data, out / QUADRANT)
    return {"results": out / RESULTS, "leaderboard": out / LEADERBOARD, "quadrant": out / QUADRANT}


def _cell(value: dict[str, Any] | None) -> str:
    if not value or value.get("mean") is None:
        return "n/a"
    ci = value.get("ci95")
    return f"{value['mean']:.3f} ± {ci:.3f}" if ci is not None else f"{value['mean']:.3f}"


def _undefined(scenario: dict[str, Any]) -> list[str]:
    """What a cell without "± CI" or with "n/a" means, for the metrics of `scenario` that have one."""
    values = [(m, v) for agent in scenario["metrics"].values() for m, v in agent.items()]
    no_ci = sorted({m for m, v in values if v.get("mean") is not None and v.get("ci95") is None})
    none = sorted({m for m, v in values if v.get("mean") is None})
    return ([f"No ± on {', '.join(no_ci)}: one user had the metric, and a 95% CI needs 2+ users."] if no_ci else []) \
        + ([f"n/a on {', '.join(none)}: no user had the metric (e.g. no instruction given)."] if none else [])


def _offline_cell(entry: dict[str, Any], metric: str) -> str:
    if "not_ranked" in entry:
        return "not ranked offline"
    return _cell(entry.get(metric))


def leaderboard(data: dict[str, Any]) -> str:
    """One Markdown table per scenario, best first by the scenario's first metric; 95% CIs over users."""
    off = data["offline"]
    metric = off["metric"]
    lines = ["# RecoWorld-Bench leaderboard", "",
             f"RecoWorld {data['recoworld']}. Values are means ± 95% CI half-widths over the scenario's users. "
             f"Offline {metric.upper()}: held-out interactions of a reference log "
             f"(seed {off['seed']}), the same for every scenario.", ""]
    for name, sc in data["scenarios"].items():
        metrics = sc["metrics_order"]
        lines += [f"## {name} (v{sc['version']}, seed {sc['seed']}, config {sc['config_hash']})", "",
                  f"{sc['description']}; {sc['n_users']} users.", ""]
        lines += [f"_{note}_" for note in sc["notes"]] + ([""] if sc["notes"] else [])
        first = metrics[0]
        order = sorted(sc["metrics"], key=lambda a: -(sc["metrics"][a][first]["mean"] or float("-inf")))
        lines.append("| rank | agent | " + " | ".join(metrics) + f" | offline {metric} |")
        lines.append("|---:|---|" + "---:|" * len(metrics) + "---:|")
        for rank, agent in enumerate(order, 1):
            cells = [_cell(sc["metrics"][agent].get(m)) for m in metrics]
            lines.append(f"| {rank} | {agent} | " + " | ".join(cells)
                         + f" | {_offline_cell(off['agents'].get(agent, {}), metric)} |")
        lines.append("")
        undefined = _undefined(sc)
        lines += [f"_{why}_" for why in undefined] + ([""] if undefined else [])
    not_ranked = {a: e["not_ranked"] for a, e in off["agents"].items() if "not_ranked" in e}
    if not_ranked:
        lines += ["Not ranked offline: " + "; ".join(f"{a}: {why}" for a, why in not_ranked.items()) + ".", ""]
    used = dict.fromkeys(m for sc in data["scenarios"].values() for m in sc["metrics_order"])
    lines += ["Metrics:", ""] + [f"- `{m}`: {METRICS[m]}" for m in used] + [""]
    return "\n".join(lines)


#: What the quadrant plot's grey lines are, printed under its panels.
QUADRANT_NOTE = ("Grey lines: the agents' mean offline accuracy (dashed, vertical) and mean retention (dotted, "
                 "horizontal). Top right: accurate offline and retaining online; bottom right: accurate but not "
                 "retaining.")


def quadrant_plot(data: dict[str, Any], path: Path) -> Path:
    """`quadrant_figure` saved as a PNG."""
    import matplotlib.pyplot as plt

    fig = quadrant_figure(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def quadrant_figure(data: dict[str, Any]) -> Figure:
    """Offline accuracy (x) against retention (y), one panel per scenario that reports retention.

    The dashed lines are the agents' means: top right is accurate offline and retaining
    online, bottom right accurate but not retaining. Each panel has a legend of its agents and
    of the dashed lines, and the figure says in words what the lines are (`QUADRANT_NOTE`): a
    reader of the PNG alone has nothing else to go by. Agents without an offline ranking are
    named under the panels instead of being placed anywhere."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    off = data["offline"]
    metric = off["metric"]
    panels = [(n, sc) for n, sc in data["scenarios"].items() if "retention" in sc["metrics_order"]]
    cols = min(max(len(panels), 1), 3)
    rows = -(-max(len(panels), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    missing = {a: e["not_ranked"] for a, e in off["agents"].items() if "not_ranked" in e}
    for ax, (name, sc) in zip(axes.flat, panels):
        xs, ys = [], []
        for i, agent in enumerate(data["agents"]):
            entry = off["agents"].get(agent, {})
            ret = sc["metrics"].get(agent, {}).get("retention")
            if "not_ranked" in entry or not ret or ret.get("mean") is None:
                continue
            x, xe = entry[metric]["mean"], entry[metric]["ci95"] or 0.0
            y, ye = ret["mean"], ret["ci95"] or 0.0
            ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", color=f"C{i % 10}", capsize=3, label=agent)
            ax.annotate(agent, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
            xs.append(x)
            ys.append(y)
        if xs:
            ax.axvline(sum(xs) / len(xs), color="grey", ls="--", lw=0.8, label="mean offline accuracy")
            ax.axhline(sum(ys) / len(ys), color="grey", ls=":", lw=0.8, label="mean retention")
            ax.legend(fontsize=7, loc="best", framealpha=0.85)
        ax.set_title(f"{name} v{sc['version']}", fontsize=10)
        ax.set_xlabel(f"offline {metric.upper()} (reference log, held out)")
        ax.set_ylabel("retention (share of days active)")
        ax.grid(alpha=0.3)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no scenario reports retention", ha="center", va="center")
    fig.text(0.01, 0.045 if missing else 0.012, QUADRANT_NOTE, fontsize=7, wrap=True)
    if missing:
        fig.text(0.01, 0.01, "not ranked offline (no point): " + "; ".join(f"{a} ({why})" for a, why in
                                                                           missing.items())[:300], fontsize=7)
    fig.suptitle("Offline accuracy against retention")
    fig.tight_layout(rect=(0, 0.09 if missing else 0.05, 1, 0.95))
    return fig
