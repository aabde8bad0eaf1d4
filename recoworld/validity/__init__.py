"""Validity: do simulated users behave like the real users of a log, on the same users and items?

`events` turns a real log and a RecoWorld trajectory into one shape, `facts` computes the
stylized facts of either and their distances, `run` is the protocol (`validate`),
`continuation` simulates the compared users from where they stand at the cutoff, and
`report` writes the table, `validity.csv` and one figure per period (out-of-sample, the
headline, and in-sample). `recoworld validate` is the CLI.
"""

from recoworld.validity.events import SESSION_GAP_MINUTES, ConsumptionLog, from_interactions, from_trajectories
from recoworld.validity.facts import EVENT_FACTS, NOT_IN_LOG, Fact, compare, event_facts
from recoworld.validity.report import describe_period, plot_validity, validity_table, write_validity
from recoworld.validity.run import (
    HEADLINE,
    IN_SAMPLE,
    OUT_OF_SAMPLE,
    PERIODS,
    Period,
    SimWorld,
    ValidityConfig,
    ValidityResult,
    headline,
    validate,
)

__all__ = [
    "EVENT_FACTS",
    "HEADLINE",
    "IN_SAMPLE",
    "NOT_IN_LOG",
    "OUT_OF_SAMPLE",
    "PERIODS",
    "SESSION_GAP_MINUTES",
    "ConsumptionLog",
    "Fact",
    "Period",
    "SimWorld",
    "ValidityConfig",
    "ValidityResult",
    "compare",
    "describe_period",
    "event_facts",
    "from_interactions",
    "from_trajectories",
    "headline",
    "plot_validity",
    "validate",
    "validity_table",
    "write_validity",
]
