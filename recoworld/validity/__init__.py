"""Validity: do simulated users behave like the real users of a log, on the same users and items?

`events` turns a real log and a RecoWorld trajectory into one shape, `facts` computes the
stylized facts of either and their distances, `run` is the protocol (`validate`), and
`report` writes the table, `validity.csv` and the figure. `recoworld validate` is the CLI.
"""

from recoworld.validity.events import SESSION_GAP_MINUTES, ConsumptionLog, from_interactions, from_trajectories
from recoworld.validity.facts import EVENT_FACTS, NOT_IN_LOG, Fact, compare, event_facts
from recoworld.validity.report import plot_validity, validity_table, write_validity
from recoworld.validity.run import HEADLINE, SimWorld, ValidityConfig, ValidityResult, headline, validate

__all__ = [
    "EVENT_FACTS",
    "HEADLINE",
    "NOT_IN_LOG",
    "SESSION_GAP_MINUTES",
    "ConsumptionLog",
    "Fact",
    "SimWorld",
    "ValidityConfig",
    "ValidityResult",
    "compare",
    "event_facts",
    "from_interactions",
    "from_trajectories",
    "headline",
    "plot_validity",
    "validate",
    "validity_table",
    "write_validity",
]
