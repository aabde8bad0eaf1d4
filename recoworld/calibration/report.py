"""The terminal table of a calibration: every fitted parameter with its uncertainty, and the fit quality."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def calibration_table(report: dict[str, Any]) -> Table:
    """One row per fitted parameter (value, standard error, 95% CI or how it was fitted)."""
    table = Table(title="Calibrated parametric user")
    for header, justify in (("parameter", "left"), ("value", "right"), ("± SE", "right"), ("95% CI / note", "left")):
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
    like = report["like_threshold"]
    if "value" in like:
        estimate("choice.like_threshold", like)
    else:
        table.add_row("choice.like_threshold", "", "", like["note"])
    for name in ("conformity", "activity"):
        s = report[name]
        table.add_row(f"per-user {name}", f"{s['median']:.3g}", "", f"median; p10 {s['p10']:.3g}, p90 {s['p90']:.3g}")
    ll = choice["loglik_per_choice"]
    table.add_row("choice log-lik / choice", f"{ll['train']:.4f}", "",
                  f"train; valid {ll['valid']:.4f}; all weights 0: {ll['null']:.4f}")
    table.add_row("not identified by a log", "", "", ", ".join(report["not_identified"]))
    return table
