"""The terminal tables of a calibration: every fitted parameter with its uncertainty, the fitted-vs-log check
and the choice weights on time folds."""

from __future__ import annotations

from typing import Any

from rich.console import JustifyMethod
from rich.table import Table


def calibration_table(report: dict[str, Any]) -> Table:
    """One row per fitted parameter (value, standard error, 95% CI or how it was fitted)."""
    table = Table(title="Calibrated parametric user")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("parameter", "left"), ("value", "right"), ("± SE", "right"), ("95% CI / note", "left"))
    for header, justify in columns:
        table.add_column(header, justify=justify)

    def estimate(name: str, est: dict[str, Any]) -> None:
        lo, hi = est["ci95"]
        table.add_row(name, f"{est['value']:.4g}", f"{est['se']:.2g}", f"[{lo:.4g}, {hi:.4g}]")

    choice, sessions, moments = report["choice"], report["sessions"], report["moments"]
    for term, est in choice["weights"].items():
        estimate(f"choice.{term}", est)
    estimate("returns.gap_shape", sessions["gap_shape"])
    estimate("churn probability per session", sessions["churn_probability"])
    table.add_row("returns.base_rate", f"{sessions['base_rate']:.4g}", "", "from per-user posterior return rates")
    visits = sessions["visits"]
    table.add_row("returns.satisfaction_reference", f"{visits['satisfaction_reference']:.4g}", "",
                  "fitted return rates hold on average over simulated end-of-session satisfaction")
    table.add_row("returns.churn_bias", f"{sessions['churn_bias']:.4g}", "",
                  f"mean churn per visit {visits['churn_per_visit']:.3g}; {visits['consuming_share']:.3g} of "
                  "visits consume (a log records only those)")
    table.add_row("returns.churn_after", str(sessions["churn_after"]), "",
                  "the log's inclusion floor: no user of it left before this many interactions")
    table.add_row("choice.bias", f"{moments['bias']:.4g}", "",
                  f"simulated moments, {moments['evaluations']} evaluations, objective {moments['objective']:.3g}")
    table.add_row("patience scale", f"{moments['patience_scale']:.4g}", "", "simulated moments")
    if "budget_scale" in moments:
        table.add_row("time budget scale", f"{moments['budget_scale']:.4g}", "", "simulated moments")
    exposure = report.get("exposure")
    if exposure:
        table.add_row("assumed CTR", f"{exposure['assumed_ctr']:.4g}", "",
                      f"not identified by a log without impressions; simulated {exposure['simulated_ctr']:.3g}")
    like = report["like_threshold"]
    if "value" in like:
        estimate("choice.like_threshold", like)
        if "log_mle" in like:
            table.add_row("  on the log's utilities", f"{like['log_mle']:.4g}", "",
                          "MLE on context utilities; the world's is solved on simulated click utilities")
    else:
        table.add_row("choice.like_threshold", "", "", like["note"])
    for name in ("conformity", "activity"):
        s = report[name]
        table.add_row(f"per-user {name}", f"{s['median']:.3g}", "", f"median; p10 {s['p10']:.3g}, p90 {s['p90']:.3g}")
    attention = report.get("attention") or {}
    if attention.get("half_life_days") is not None:
        grid = attention.get("grid", {})
        table.add_row("popularity half-life (days)", str(attention["half_life_days"]), "",
                      f"{attention.get('how', '')}; valid log-lik per choice by half-life: "
                      + ", ".join(f"{h}: {v['valid_loglik']:.4f}" for h, v in grid.items()))
    ll = choice["loglik_per_choice"]
    table.add_row("choice log-lik / choice", f"{ll['train']:.4f}", "",
                  f"train; valid {ll['valid']:.4f}; all weights 0: {ll['null']:.4f}")
    table.add_row("not identified by a log", "", "", ", ".join(report["not_identified"]))
    return table


def fit_check_table(report: dict[str, Any]) -> Table:
    """Fitted vs log: each statistic of the log next to the calibrated world's simulated one, and its tolerance."""
    table = Table(title="Fitted vs log (calibrated users simulated over the train window, uniform exposure)")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("statistic", "left"), ("log", "right"), ("simulated", "right"), ("tolerance", "left"), ("ok", "left"))
    for header, justify in columns:
        table.add_column(header, justify=justify)
    for name, row in report.get("fit_check", {}).items():
        ok = {True: "yes", False: "[bold red]NO[/]", None: "-"}[row["ok"]]
        table.add_row(name, _num(row["log"]), _num(row["simulated"]), str(row["tolerance"]), ok)
    return table


def folds_table(report: dict[str, Any]) -> Table:
    """The choice weights fitted on consecutive time windows of the train log, value ± SE per fold."""
    folds = report.get("folds", [])
    terms = next((list(f["weights"]) for f in folds if "weights" in f), [])
    table = Table(title="Choice weights on time folds of the train log (value ± SE)")
    table.add_column("fold", justify="left")
    table.add_column("choices", justify="right")
    for term in terms:
        table.add_column(term, justify="right")
    all_fit = report["choice"]["weights"]
    table.add_row("all train", str(report["choice"]["choices"]["fit"]),
                  *[f"{all_fit[t]['value']:.3g} ± {all_fit[t]['se']:.2g}" for t in terms])
    for f in folds:
        if "weights" not in f:
            table.add_row(str(f["fold"]), "", *[""] * len(terms))
            continue
        table.add_row(str(f["fold"]), str(f["choices"]),
                      *[f"{f['weights'][t]['value']:.3g} ± {f['weights'][t]['se']:.2g}" for t in terms])
    return table


def _num(x: object) -> str:
    return "n/a" if x is None else f"{float(x):.3g}"  # type: ignore[arg-type]
