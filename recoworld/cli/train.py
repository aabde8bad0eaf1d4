"""`recoworld train`: a PPO recommender (Ray RLlib) trained on RecoWorld-v0 and compared with the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recoworld.cli.common import clocked, console, fail, hold, outputs, say
from recoworld.cli.options import CalibratedOption, seed_option
from recoworld.errors import RecoWorldError


def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="training config (YAML), e.g. configs/ppo_small.yaml")] = None,
    out: Annotated[Path, typer.Option(help="output directory: checkpoints, curve, plot")] = Path("runs/train"),
    iterations: Annotated[int | None, typer.Option(help="override the PPO iteration budget")] = None,
    num_env_runners: Annotated[int | None, typer.Option(help="override the number of remote env runners")] = None,
    seed: Annotated[int | None, seed_option(" (default: the training config's)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint in --out")] = False,
    calibrated: CalibratedOption = None,
) -> None:
    """Train a PPO recommender (Ray RLlib) on RecoWorld-v0 and compare it with the baselines.

    Ctrl-C or SIGTERM stops it cleanly (one line, exit code 130 or 143, Ray shut down); Ray's own log
    lines go to ray.log in --out."""
    try:
        from recoworld.rl.evaluation import format_table
        from recoworld.rl.train_config import TrainConfig
        from recoworld.rl.training import StopSignals, kept, latest_checkpoint, local_ray
        from recoworld.rl.training import train as run

        cfg = TrainConfig.load(
            config, iterations=iterations, num_env_runners=num_env_runners, seed=seed, calibrated=calibrated
        )
        hold(ctx, out)
    except ImportError as err:
        raise fail(RecoWorldError(f"training needs the rllib extra (pip install 'recoworld[rllib]'): {err}")) from None
    except (RecoWorldError, FileNotFoundError) as err:
        raise fail(err) from None
    stop = StopSignals()
    try:
        with local_ray(cfg.num_env_runners, out / "ray.log", stop):
            result = run(cfg, out, resume=resume, log=clocked)  # each line with its time: training runs long
    except KeyboardInterrupt:
        import signal

        signum = stop.received or signal.SIGINT
        say(f"stopped by {signal.Signals(signum).name}; {kept(latest_checkpoint(out))}")
        raise typer.Exit(code=128 + signum) from None
    except RecoWorldError as err:
        raise fail(err) from None
    console.print(format_table(result.table), highlight=False)
    say(f"training time: {result.train_seconds:.0f} s")
    tables = [out / name for name in ("curve.parquet", "evaluation.parquet", "policy_users.parquet", "ray.log")]
    files = [result.checkpoint, *(f for f in tables if f.exists()), result.plot]
    outputs(out, files, then=f"use it: recoworld simulate --agents rllib:{result.checkpoint}")
