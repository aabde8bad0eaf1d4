"""The `recoworld` command line: one module per command group, the option groups they share in `options`.

Commands parse flags and print; what they do lives in the library (`recoworld.calibration.worlds`,
`recoworld.evaluation.fidelity_run`, `recoworld.evaluation.llm_run`, ...), where tests call it directly.

| module | commands |
|---|---|
| `simulate` | simulate |
| `real_logs` | calibrate, fidelity, validate, transfer |
| `distill` | distill |
| `bench` | bench |
| `study` | study |
| `train` | train |
| `files` | report, catalog |
| `check_agent` | check-agent |
"""

from __future__ import annotations

from recoworld.cli import bench, check_agent, distill, files, real_logs, simulate, study, train
from recoworld.cli.common import app

__all__ = ["app", "main"]

# In the order `recoworld --help` lists them.
for _command in (
    simulate.simulate,
    train.train,
    study.study,
    real_logs.fidelity,
    real_logs.validate,
    real_logs.calibrate,
    real_logs.transfer,
    distill.distill,
    bench.bench,
    files.report,
):
    app.command()(_command)
app.command("catalog")(files.make_catalog)
app.command("check-agent")(check_agent.check_agent)


def main() -> None:
    """The console script: the app, with any local model process stopped on Ctrl-C and at the end.
    SIGTERM is handled as Ctrl-C, so `finally` blocks run (a study shuts its Ray down).

    Ctrl-C can leave a worker thread blocked on the model's reply, and `asyncio.run` waits
    for that thread before the exception reaches us. Stopping the model first, in the signal
    handler, closes the pipe, so the run exits at once instead of after the reply.
    """
    import signal
    from types import FrameType

    from recoworld.llm.supervisor import close_all
    from recoworld.studies.ray_cleanup import STOP_REQUESTED

    def interrupt(signum: int, frame: FrameType | None) -> None:
        STOP_REQUESTED.set()
        close_all()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        app()
    finally:
        close_all()
