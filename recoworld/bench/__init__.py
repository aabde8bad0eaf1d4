"""RecoWorld-Bench: versioned, seeded scenarios, a leaderboard with CIs and the accuracy-retention quadrant.

    recoworld bench --list
    recoworld bench --scenarios retention-30d,cold-start --agents random,greedy --out runs/bench

`scenarios` defines the tasks, `metrics` what they report, `offline` each recommender's
NDCG on a reference log, `runner` runs them and `report` writes results.json,
leaderboard.md and quadrant.png.
"""

from recoworld.bench.offline import OfflineConfig, offline_accuracy
from recoworld.bench.runner import BenchResult, ScenarioRun, check_inputs, run_bench
from recoworld.bench.scenarios import SCENARIOS, InterestShift, Scenario, get_scenarios

__all__ = ["SCENARIOS", "BenchResult", "InterestShift", "OfflineConfig", "Scenario", "ScenarioRun", "check_inputs",
           "get_scenarios", "offline_accuracy", "run_bench"]
