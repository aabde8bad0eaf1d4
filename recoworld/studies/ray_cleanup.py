"""What Ray's public API cannot end: the processes of a local Ray session whose driver never shut it down.

Ray's public API ends everything a study or a training run starts, whenever the driver lives to call it: a
run's `finally` calls `ray.shutdown()` (which ends the session's gcs_server, raylet, agents and workers),
running shard tasks are cancelled with `ray.cancel(ref, force=True)` and the shared LLM actor ends with
`ray.kill(actor)`; SIGTERM is made to interrupt like Ctrl-C (`sigterm_interrupts`) so those `finally` blocks
run. Two cases are left, and only they are handled here, by reading `/proc` (Linux; elsewhere nothing is
found and nothing is ended):

1. **The driver was killed (`kill -9`).** It ran no shutdown, and there is no public call that reaches a
   session without a driver: its head processes notice and exit, but the dashboard and runtime-env agents
   (and sometimes workers) stay, re-parented and ignoring SIGTERM. `clean_stale_ray` ends them before the
   next local `ray.init()`. (`ray stop` would end every Ray process of the machine, a user's own cluster
   and a concurrent study included.)
2. **A signal arrived while `ray.init()` was starting the session.** `ray.shutdown()` then has no node to
   shut down, though some of its processes already run: `end_own_sessions` ends them.

Every process is told apart by its session: a `session_<date>_<time>_<pid>` folder named in its command line
(`--session-dir=`, `--log_dir=`, socket paths) or, for agents and workers whose command line Ray rewrites
to `ray::...`, in the paths of its open files (the session's logs). A session is *live* while its
`gcs_server` or `raylet` runs, or while the process that started it (the pid ending the session name, if it
started before the session) runs. Only the processes of sessions that are not live are ended, and only this
user's: a user's own Ray cluster or a concurrent study is never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

PROC = Path("/proc")
_SESSION = re.compile(r"((?:/[^\s/=]+)*?/?(session_(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+)_(\d+)))(?=/|$|\s)")
_HEAD = ("gcs_server", "raylet")
_RAY_SCRIPT = re.compile(r"/ray/.*\.py$")


@dataclass(frozen=True)
class RayProcess:
    """One process of a Ray session on this machine."""

    pid: int
    session: str  # the session folder's name, session_<date>_<time>_<pid>
    session_dir: str  # its path, where one was found (else the name alone)
    role: str  # gcs_server, raylet, or the process title / script (ray::DashboardAgent, dashboard.py, ...)
    start: int  # start time in clock ticks since boot: with `pid`, names the process even if the pid is reused


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks) of a process, None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def _session_in(texts: Iterable[str]) -> tuple[str, str] | None:
    """(name, path) of the first session folder named in `texts`."""
    for text in texts:
        m = _SESSION.search(text)
        if m:
            return m.group(2), m.group(1)
    return None


def _describe(pid: int, uid: int) -> RayProcess | None:
    """The process as a Ray process of a session, or None (not Ray, not ours, gone, or a zombie)."""
    path = PROC / str(pid)
    try:
        if path.stat().st_uid != uid:
            return None
        args = [a for a in (path / "cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return None
    stat = _stat(pid)
    if not args or stat is None or stat[0] in "ZX":
        return None
    argv0 = args[0].split()[0] if args[0].startswith("ray::") else args[0]
    title = argv0.startswith("ray::")
    head = os.path.basename(argv0) in _HEAD
    script = next((a for a in args[1:3] if _RAY_SCRIPT.search(a)), None)
    if not (title or head or script):
        return None
    session = _session_in(args)
    if session is None and title:  # agents and workers: the session's log files they hold open
        try:
            fds = os.listdir(path / "fd")
        except OSError:
            return None
        links = []
        for fd in fds:
            with contextlib.suppress(OSError):
                links.append(os.readlink(path / "fd" / fd))
        session = _session_in(links)
    if session is None:
        return None
    role = os.path.basename(argv0) if head else argv0 if title else os.path.basename(script or argv0)
    return RayProcess(pid, session[0], session[1], role, stat[1])


def ray_processes() -> list[RayProcess]:
    """Every running Ray process of this user on this machine, with its session."""
    if not PROC.is_dir():
        return []
    uid = os.getuid()
    found = []
    for entry in os.listdir(PROC):
        if entry.isdigit() and int(entry) != os.getpid():
            proc = _describe(int(entry), uid)
            if proc is not None:
                found.append(proc)
    return found


def _boot_time() -> float:
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _starter_alive(session: str) -> bool:
    """The process that started the session still runs (a pid reused since then does not count)."""
    m = _SESSION.search(session)
    if m is None:
        return False
    stat = _stat(int(m.group(4)))
    if stat is None or stat[0] in "ZX":
        return False
    try:
        created = dt.datetime.strptime(m.group(3), "%Y-%m-%d_%H-%M-%S_%f").timestamp()
        started = _boot_time() + stat[1] / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return True  # cannot tell: assume it is the starter
    return started <= created + 1.0


def live_sessions(procs: Iterable[RayProcess]) -> set[str]:
    """Sessions among `procs` whose gcs_server or raylet runs, or whose starter does."""
    procs = list(procs)
    live = {p.session for p in procs if p.role in _HEAD}
    return live | {s for s in {p.session for p in procs} - live if _starter_alive(s)}


def ray_temp_root() -> Path:
    """Where a local Ray started now keeps its sessions (Ray's rule: $RAY_TMPDIR, else $TMPDIR, else /tmp, + ray)."""
    return Path(os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp") / "ray"


def stale_processes(root: str | os.PathLike[str] | None = None) -> list[RayProcess]:
    """This user's Ray processes whose session is dead: orphans to end. With `root`, only those of
    sessions kept under that folder (e.g. `ray_temp_root()`)."""
    procs = ray_processes()
    live = live_sessions(procs)
    stale = [p for p in procs if p.session not in live]
    if root is None:
        return stale
    under = os.path.realpath(root) + os.sep
    return [p for p in stale if os.path.realpath(p.session_dir).startswith(under)]


def _signal(proc: RayProcess, signum: int) -> bool:
    """Send `signum` to exactly `proc` (not a process that reused its pid); False when it is gone."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        fd = None
    try:
        stat = _stat(proc.pid)
        if stat is None or stat[1] != proc.start or stat[0] in "ZX":
            return False
        if fd is not None:
            signal.pidfd_send_signal(fd, signum)
        else:
            os.kill(proc.pid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if fd is not None:
            os.close(fd)


def end_processes(procs: Iterable[RayProcess], grace_s: float = 1.0) -> list[RayProcess]:
    """SIGTERM, then after `grace_s` SIGKILL for those still running; returns the ones that were running."""
    ended = [p for p in procs if _signal(p, signal.SIGTERM)]
    deadline = time.monotonic() + grace_s
    left = ended
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _running(p)]
    for p in left:
        _signal(p, signal.SIGKILL)
    return ended


def _running(proc: RayProcess) -> bool:
    stat = _stat(proc.pid)
    return stat is not None and stat[1] == proc.start and stat[0] not in "ZX"


def clean_stale_ray(root: str | os.PathLike[str] | None = None, grace_s: float = 1.0) -> list[RayProcess]:
    """End the orphans of this user's dead local Ray sessions (under `root`, default `ray_temp_root()`);
    returns what was ended. Never raises: cleaning up is best effort."""
    try:
        return end_processes(stale_processes(ray_temp_root() if root is None else root), grace_s)
    except OSError:
        return []


def end_own_sessions(grace_s: float = 1.0) -> list[RayProcess]:
    """End whatever is left of the local Ray sessions this process started (their names end with its
    pid): what `ray.shutdown()` misses when a signal arrives while `ray.init()` is still starting them."""
    mine = f"_{os.getpid()}"
    try:
        own = [p for p in ray_processes() if p.session.endswith(mine) and _starter_alive(p.session)]
        return end_processes(own, grace_s)
    except OSError:
        return []


Handler = Callable[[int, FrameType | None], Any] | int | None


def sigterm_interrupts(previous: Handler) -> None:
    """From now on SIGTERM interrupts like Ctrl-C: `previous` (the handler from before `ray.init()`
    replaced it) runs if it is a function, else KeyboardInterrupt is raised, so `finally` blocks
    run and shut Ray down. A SIGTERM that was ignored stays ignored. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        if callable(previous):
            previous(signum, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, signal.SIG_IGN if previous == signal.SIG_IGN else terminate)


def restore_sigterm(previous: Handler) -> None:
    """Put back the SIGTERM handler from before (main thread only)."""
    if threading.current_thread() is threading.main_thread() and previous is not None:
        signal.signal(signal.SIGTERM, previous)


#: Set by the CLI's Ctrl-C / SIGTERM handler. Ray can swallow the KeyboardInterrupt a signal raises
#: while `ray.init()` starts its processes, so a study also checks this before it could end as complete.
STOP_REQUESTED = threading.Event()


@contextlib.contextmanager
def stop_noted_during_init() -> Iterator[None]:
    """While `ray.init()` runs, Ray installs its own SIGTERM handler (a `sys.exit` that can be lost in its
    start-up); every SIGTERM handler installed meanwhile is wrapped so that a SIGTERM then also sets
    `STOP_REQUESTED`. Ray offers no hook for this, so the wrap is on the standard library's `signal.signal`,
    which Ray calls, for the duration of the `with` block only (main thread: only it may install handlers)."""
    install = signal.signal

    def install_noted(signum: int, handler: Handler) -> Handler:
        if signum != signal.SIGTERM or not callable(handler):
            return install(signum, handler)
        ray_handler = handler

        def noted(signum: int, frame: FrameType | None) -> None:
            STOP_REQUESTED.set()
            ray_handler(signum, frame)

        return install(signum, noted)

    def quiet_stop(unraisable: Any) -> None:
        """Ray's handler exits with `sys.exit` wherever the signal lands; inside a fork hook or a
        finalizer Python can only print that exit and drop it. The stop is already noted (and is
        acted on), so such a dropped exit is not shown as a traceback."""
        if not (STOP_REQUESTED.is_set() and isinstance(unraisable.exc_value, (SystemExit, KeyboardInterrupt))):
            hook(unraisable)

    hook = sys.unraisablehook
    signal.signal = install_noted  # type: ignore[assignment]
    sys.unraisablehook = quiet_stop
    try:
        yield
    finally:
        signal.signal = install
        sys.unraisablehook = hook
