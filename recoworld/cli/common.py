"""What every command shares: the app, the console, one-line errors, the --out check and lock, progress lines,
the stage lines of long work, warnings and the closing `outputs:` line.

Commands parse flags and print; nothing here decides what a run does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from recoworld.errors import ConfigError, RecoWorldError

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.status import Status

M = TypeVar("M", bound="BaseModel")
app = typer.Typer(
    help="RecoWorld: a simulation environment for agentic recommender systems.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(log_path=False)  # a progress line's source file and line number tell a user nothing
if not console.is_terminal:  # piped or in CI: do not squeeze the summary table into 80 columns
    console = Console(width=180, log_path=False)

#: `recoworld --debug ...`: errors that carry a traceback (`RecommenderFailed.details`) print it above their line.
_DEBUG = {"on": False}


def _version(show: bool) -> None:
    """`recoworld --version`: the installed distribution's version, then exit."""
    if show:
        from recoworld import __version__

        console.print(f"recoworld {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options_for_every_command(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="print the traceback behind an error from a recommender's own code, above its one-line error",
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the installed version and exit")
    ] = False,
) -> None:
    _DEBUG["on"] = debug


def fail(err: Exception) -> typer.Exit:
    """The exit of a command that failed: one line, however long, exit code 2."""
    details = getattr(err, "details", "")
    if _DEBUG["on"] and details:
        console.print(details, markup=False, highlight=False, soft_wrap=True)
    # Escaped, since rich would take a value such as "[nan, 1.0]" for a style tag.
    console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)


def writable_dir(path: Path, flag: str, given: Path | None = None) -> None:
    """Check before the work, not after it: a run whose results cannot be written is lost. `given`: what
    the flag named, when `path` is the folder of a file to write (the error names the flag's own value)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".recoworld-write-check"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise RecoWorldError(
            f"{flag} {given or path}: cannot write there ({err.strerror or type(err).__name__})"
        ) from None


def hold(ctx: typer.Context, path: Path) -> None:
    """`path` writable and locked until the command ends, however it ends: two runs writing one
    folder at once would each pass the manifest check and mix their results."""
    from recoworld.evaluation.run_folder import FolderLock

    writable_dir(path, "--out")
    ctx.call_on_close(FolderLock.take(path, ctx.info_name or "run").release)


def validated(model: type[M], flags: dict[str, str], data: dict[str, Any]) -> M:
    """Command-line values validated into `model`; a bad one is one line that names its flag
    (`flags`: field path -> flag), never pydantic's multi-line report."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = [str(p) for p in e["loc"]]
            name = next(
                (flags[p] for p in (".".join(loc[:n]) for n in range(len(loc), 0, -1)) if p in flags),
                ".".join(loc) or model.__name__,
            )
            got = e.get("input")
            shown = f" {got!r}" if isinstance(got, str) else f" {got}" if isinstance(got, int | float | Path) else ""
            problems.append(f"{name}{shown}: {e['msg'].removeprefix('Value error, ')}")
        raise ConfigError("; ".join(problems)) from None


def names(value: str) -> list[str]:
    """A comma-separated flag's names, blanks dropped."""
    return [name.strip() for name in value.split(",") if name.strip()]


def note(message: str) -> None:
    """A progress line where no live display can show one: output piped or redirected to a file."""
    if not console.is_terminal:
        clocked(message)


def clocked(message: str) -> None:
    """A progress line with the time of day: `[09:12:01] message` (plain, not padded to the console's width)."""
    console.print(f"[{time.strftime('%H:%M:%S')}] {message}", markup=False, highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """One plain line (no markup, no highlighting), wrapped only by the terminal."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def bars(*, transient: bool = False) -> Progress:
    """The progress bars of every command: description, bar, done/total, time elapsed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


def advance(progress: Progress, task: TaskID, every: int = 50) -> None:
    """Advance a bar; without a terminal, say how far it got every `every` steps and at the end."""
    progress.advance(task)
    t = progress.tasks[task]
    if t.completed % every == 0 or t.completed == t.total:
        note(f"{t.description.strip()}: {t.completed:.0f}/{t.total:.0f} in {elapsed(t.elapsed or 0.0)}")


def elapsed(seconds: float) -> str:
    """`4.2 s`, `3 min 05 s`, `1 h 02 min`: what a stage line says it took."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Stages:
    """The stage lines of long work: calling it with a stage's name ends the stage before (a line with
    its time, always, since neither a spinner nor a file keeps it) and starts this one (a line only
    without a terminal, where the spinner `status` names it otherwise). The library announces its
    stages through a `Callable[[str], None]` (`calibrate(on_stage=...)`, `validate(progress=...)`);
    this is the one place they become lines."""

    def __init__(self, status: Status | None = None, checks_first: bool = False) -> None:
        self.status = status
        self.name: str | None = None
        self.started = 0.0
        self.quiet = checks_first

    def __call__(self, name: str) -> None:
        """Start stage `name`. With `checks_first`, the first stage checks the inputs: its start line is held
        back (its end line says what it took), so that a bad input is one error line and nothing before it."""
        self.end()
        self.name, self.started = name, time.perf_counter()
        if self.status is not None:
            self.status.update(name)
        if not self.quiet:
            note(f"{name} ...")
        self.quiet = False

    def end(self) -> None:
        """End the running stage, if any: `NAME: done in T`."""
        if self.name is not None:
            clocked(f"{self.name}: done in {elapsed(time.perf_counter() - self.started)}")
            self.name = None


@contextmanager
def stages(first: str | None = None, checks_first: bool = False) -> Iterator[Stages]:
    """A spinner on a terminal, stage lines always (`Stages`, `checks_first` as there), starting with stage
    `first` if given (else with the first the library announces); the last stage ends when the block does,
    unless by an error (whose line follows, without a "done")."""
    with console.status(first or "starting") as status:
        lines = Stages(status, checks_first)
        if first is not None:
            lines(first)
        try:
            yield lines
        except BaseException:
            lines.name = None  # not done: the error's own line says what happened
            raise
        lines.end()


def warn(message: str) -> None:
    """A number worth a second look before it is reported: one yellow `warning:` line."""
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True, highlight=False)


def outputs(folder: Path, files: Sequence[str | Path], then: str = "") -> None:
    """The last line of every command that writes files: `outputs: FOLDER (file, file, ...)`, the files
    relative to the folder where they are inside it; `then`: what to do with them next, on the same line."""
    shown = [str(Path(f).relative_to(folder)) if Path(f).is_relative_to(folder) else str(f) for f in files]
    say(f"outputs: {folder} ({', '.join(shown)})" + (f"; {then}" if then else ""))
