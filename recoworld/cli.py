"""The `recoworld` command line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from recoworld.errors import ConfigError, RecoWorldError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from recoworld.calibration import CalibratedWorld
    from recoworld.config import WorldConfig
    from recoworld.data import RealWorld

M = TypeVar("M", bound="BaseModel")
app = typer.Typer(help="RecoWorld: a simulation environment for agentic recommender systems.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
if not console.is_terminal:  # piped or in CI: do not squeeze the summary table into 80 columns
    console = Console(width=180)


def _writable_dir(path: Path, flag: str, given: Path | None = None) -> None:
    """Check before the work, not after it: a run whose results cannot be written is lost. `given`: what
    the flag named, when `path` is the folder of a file to write (the error names the flag's own value)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".recoworld-write-check"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise RecoWorldError(f"{flag} {given or path}: cannot write there ({err.strerror or type(err).__name__})") \
            from None


def _hold(ctx: typer.Context, path: Path) -> None:
    """`path` writable and locked until the command ends, however it ends: two runs writing one
    folder at once would each pass the manifest check and mix their results."""
    from recoworld.evaluation.run_folder import FolderLock

    _writable_dir(path, "--out")
    ctx.call_on_close(FolderLock.take(path, ctx.info_name or "run").release)


def _options(model: type[M], flags: dict[str, str], data: dict[str, Any]) -> M:
    """Command-line values validated into `model`; a bad one is one line that names its flag
    (`flags`: field path -> flag), never pydantic's multi-line report."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = [str(p) for p in e["loc"]]
            name = next((flags[p] for p in (".".join(loc[:n]) for n in range(len(loc), 0, -1)) if p in flags),
                        ".".join(loc) or model.__name__)
            got = e.get("input")
            shown = f" {got!r}" if isinstance(got, str) else f" {got}" if isinstance(got, int | float | Path) else ""
            problems.append(f"{name}{shown}: {e['msg'].removeprefix('Value error, ')}")
        raise ConfigError("; ".join(problems)) from None


def _note(message: str) -> None:
    """A progress line where no live display can show one: output piped or redirected to a file."""
    if not console.is_terminal:
        console.log(message, highlight=False)


def _advance(progress: Progress, task: TaskID, every: int = 50) -> None:
    """Advance a bar; without a terminal, say how far it got every `every` steps and at the end."""
    progress.advance(task)
    t = progress.tasks[task]
    if t.completed % every == 0 or t.completed == t.total:
        _note(f"{t.description.strip()}: {t.completed:.0f}/{t.total:.0f}")


#: `recoworld --debug ...`: errors that carry a traceback (`RecommenderFailed.details`) print it above their line.
_DEBUG = {"on": False}


@app.callback()
def _options_for_every_command(
    debug: Annotated[bool, typer.Option("--debug", help="print the traceback behind an error from a recommender's "
                                                        "own code, above its one-line error")] = False,
) -> None:
    _DEBUG["on"] = debug


def _fail(err: Exception) -> typer.Exit:
    details = getattr(err, "details", "")
    if _DEBUG["on"] and details:
        console.print(details, markup=False, highlight=False, soft_wrap=True)
    # One line, however long; escaped, since rich would take a value such as "[nan, 1.0]" for a style tag.
    console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)


def _llm_ready(world: WorldConfig, out: Path, *, calls_model: bool) -> WorldConfig:
    """`world` with its LLM cache under `out` (unless llm.cache_path is set); when the run calls a model,
    the server is probed once first, so an unreachable one is an error before anything runs or falls back."""
    from recoworld.llm.health import check_server

    world = world.model_copy(update={"llm": world.llm.for_run(out)})
    if calls_model:
        check_server(world.llm)
    return world


DATA_HELP = ("real dataset: a MovieLens 100K/1M folder (grouplens.org), RecBole atomic files, or "
             "interactions.<csv|tsv|jsonl|parquet>; catalog and users come from its train split")
EMBEDDING_HELP = ("item representation for --data: auto (= mf, factors learned from the log's behaviour), mf, "
                  "sentence, tfidf, features, mf+tfidf, mf+sentence")
DATA_FLAGS = {"path": "--data", "representation": "--embedding", "seed": "--seed", "split": "--split",
              "test_fraction": "--test-fraction"}
CALIBRATED_HELP = "a calibrated world (the --out of `recoworld calibrate`): its world config, catalog and users"
SPLIT_HELP = ("global (default): one time cutoff, nothing fitted sees an interaction after it; per_user: each "
              "user's latest interactions held out, which LEAKS other users' later interactions into train (Ji et "
              "al., TOIS 2023)")
ATTENTION_HELP = ("item popularity: none (all-time counts of the past, a world static in time), fit (attention "
                  "decayed with a half-life fitted on the past: by the choice model's validation likelihood when "
                  "calibrating), or a half-life in days")
DRIFT_HELP = ("users' interests: none (every past interaction weighs alike), fit (recent interactions weigh more, "
              "with a half-life fitted on the past where the log shows drift), or a half-life in days")
TIME_FLAGS = {"representation.popularity_half_life_days": "--attention",
              "representation.interest_half_life_days": "--drift", "representation.embedding": "--embedding"}


def _time(attention: str, drift: str) -> dict[str, object]:
    """The representation fields of --attention and --drift ('none' = no decay, 'fit', or days)."""
    def value(flag: str) -> object:
        return {"fit": "fit", "none": None}.get(flag, flag)

    return {"popularity_half_life_days": value(attention), "interest_half_life_days": value(drift)}


PASSES_HELP = ("passes of shuffled slates behind the simulated AUC (users click a few percent of what they see, so "
               "few passes measure the pass count); default: DEFAULT_PASSES of recoworld.evaluation.fidelity (200), "
               "the same in fidelity and validate")


def _real_world(data: Path, embedding: str, seed: int, **split: object) -> RealWorld:
    """Load and prepare a dataset, echoing what was built (the embedding actually used included)."""
    from recoworld.data import DataConfig, prepare_world

    cfg = _options(DataConfig, DATA_FLAGS, {"path": data, "representation": {"embedding": embedding}, "seed": seed,
                                            **split})
    with console.status(f"loading {data}"):
        real = prepare_world(cfg)
    console.print(real.describe(), highlight=False)
    return real


def _calibrated(path: Path, config: Path | None, **overrides: object) -> CalibratedWorld:
    """A calibrated world: its world.yaml, what --config sets merged on top (as `train` and `study`
    merge their config's world), and CLI overrides on top of both."""
    from recoworld.calibration import load_calibration
    from recoworld.config import WorldConfig, deep_merge, load_config

    calibrated = load_calibration(path)
    fitted = calibrated.world.model_dump()
    calibrated.world = load_config(WorldConfig, config or path / "world.yaml", "world config",
                                   prepare=lambda data, _file: deep_merge(fitted, data), **overrides)
    return calibrated


def _real_for(
    data: Path, embedding: str, seed: int, fitted: CalibratedWorld | None, calibrated: Path | None, **split: object,
) -> RealWorld:
    """The real world, split as the calibration was (so held-out items are ones it never saw), on its items."""
    if fitted is not None:
        fit_data = fitted.report.get("data", {})
        split = {**split, **{k: fit_data[k] for k in ("split", "test_fraction") if k in fit_data}}
    real = _real_world(data, embedding, seed, **split)
    if fitted is not None and list(fitted.catalog.item_ids) != list(real.catalog.item_ids):
        raise RecoWorldError(f"{calibrated} was calibrated on other items than {data}; calibrate on {data}")
    return real


@app.command()
def simulate(
    ctx: typer.Context,
    users: Annotated[int, typer.Option(help="number of simulated users")] = 200,
    agents: Annotated[str, typer.Option(help="comma-separated recommenders")] = (
        "random,popular,greedy,diverse,instruct"
    ),
    days: Annotated[float | None, typer.Option(help="horizon in days")] = None,
    slate_size: Annotated[int | None, typer.Option(help="items per slate")] = None,
    candidates: Annotated[int | None, typer.Option(help="candidates per turn")] = None,
    seed: Annotated[int, typer.Option(help="study seed; the same seed gives the same results")] = 0,
    config: Annotated[Path | None, typer.Option(help="world config (YAML or JSON)")] = None,
    population: Annotated[Path | None, typer.Option(help="population spec (YAML)")] = None,
    catalog: Annotated[Path | None, typer.Option(help="catalog Parquet file")] = None,
    data: Annotated[Path | None, typer.Option(help=DATA_HELP)] = None,
    embedding: Annotated[str, typer.Option(help=EMBEDDING_HELP)] = "auto",
    calibrated: Annotated[Path | None, typer.Option(help=CALIBRATED_HELP)] = None,
    out: Annotated[Path, typer.Option(help="output directory; rerun to resume")] = Path("runs/simulate"),
    overwrite: Annotated[bool, typer.Option(help="--out holds another run: remove its results and start over")]
    = False,
    user_backend: Annotated[str | None, typer.Option(
        help="simulated users: parametric, llm, or surrogate (a distilled LLM user: `surrogate: DIR` in --config)",
    )] = None,
    llm: Annotated[str | None, typer.Option(help="LLM backend: local (Gemma 270M in-process) or openai")] = None,
    llm_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (key: $OPENAI_API_KEY)")] = None,
    llm_model: Annotated[str | None, typer.Option(help="model name on the server")] = None,
    llm_cache: Annotated[str | None, typer.Option(help="record/replay cache: write, read, replay (cache only, "
                                                       "no server) or off; default file: <out>/llm-cache")] = None,
    llm_budget: Annotated[float | None, typer.Option(help="stop the study at this LLM cost (USD)")] = None,
    llm_concurrency: Annotated[int | None, typer.Option(help="LLM requests in flight at once")] = None,
    judge: Annotated[bool, typer.Option(help="score instruction following with an LLM judge over the logged "
                                             "turns, on the --llm* model (cached like every LLM call)")] = False,
) -> None:
    """Run a population of users against one or several recommenders."""
    from recoworld.agents import LLM_AGENTS, check_recommender_names
    from recoworld.catalog import Catalog, cached_catalog
    from recoworld.evaluation.metrics import daily_activity
    from recoworld.evaluation.report import plot_retention, summary_table
    from recoworld.evaluation.simulation import SimulationConfig, load_world
    from recoworld.evaluation.simulation import simulate as run
    from recoworld.population import PopulationSpec

    try:
        llm_overrides = {k: v for k, v in {"backend": llm, "base_url": llm_base_url, "model": llm_model,
                                           "cache": llm_cache, "budget_usd": llm_budget,
                                           "concurrency": llm_concurrency}.items() if v is not None}
        overrides = {"horizon_days": days, "slate_size": slate_size, "n_candidates": candidates,
                     "user_backend": user_backend, "llm": llm_overrides or None}
        if calibrated is not None and (data or catalog or population):
            raise RecoWorldError("--calibrated brings its own catalog and users; "
                                 "drop --data, --catalog and --population")
        fitted = _calibrated(calibrated, config, **overrides) if calibrated is not None else None
        world = fitted.world if fitted is not None else load_world(config, **overrides)
        if data is not None and (catalog or population):
            raise RecoWorldError("--data builds the catalog and the users; drop --catalog and --population")
        if data is None and embedding != "auto":
            raise RecoWorldError(f"--embedding {embedding} applies to --data only; give --data or drop --embedding")
        spec = PopulationSpec.from_yaml(population) if population else PopulationSpec.default()
        cat = Catalog.from_parquet(catalog) if catalog else None
        names = [a.strip() for a in agents.split(",") if a.strip()]
        if not names:
            raise RecoWorldError(f"--agents {agents!r}: name at least one recommender, e.g. --agents greedy")
        check_recommender_names(names)
        world = _llm_ready(world, out, calls_model=world.user_backend == "llm" or judge
                           or any(n in LLM_AGENTS for n in names))
        cfg = _options(SimulationConfig, {"n_users": "--users", "agents": "--agents", "seed": "--seed"},
                       {"n_users": users, "agents": names, "seed": seed, "world": world, "population": spec,
                        "judge": world.llm if judge else None})
        profiles = None
        if data is not None:
            real = _real_world(data, embedding, seed)
            cat, profiles = real.catalog, real.profiles
            users = min(users, len(profiles))
        if fitted is not None:
            cat, profiles = fitted.catalog, fitted.profiles
            users = min(users, len(profiles))
        if population is not None:  # topics the catalog lacks: an error now, naming the file
            spec.check_topics(cat if cat is not None else cached_catalog(world.catalog), f"--population {population}")
        if cat is not None and world.n_candidates > len(cat):
            raise RecoWorldError(f"--candidates {world.n_candidates} (candidates per turn) exceeds the catalog size "
                                 f"{len(cat)}; give --candidates {len(cat)} or fewer")
        _hold(ctx, out)
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise _fail(err) from None

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console)
    tasks: dict[str, TaskID] = {}

    def advance(name: str) -> None:  # bars start with the first episode: a refused --out prints its error alone
        if not tasks:
            progress.start()
        if name not in tasks:
            tasks[name] = progress.add_task(f"{name:>10}", total=users)
        progress.advance(tasks[name])

    inputs = {k: str(v) for k, v in {"config": config, "population": population, "catalog": catalog, "data": data,
                                     "calibrated": calibrated}.items() if v is not None}
    try:
        result = run(cfg, catalog=cat, out=out, profiles=profiles, on_episode=advance, overwrite=overwrite,
                     inputs=inputs, also_writes=["retention.png"])
    except RecoWorldError as err:
        raise _fail(err) from None
    finally:
        if tasks:
            progress.stop()
    if result.resumed:
        console.print(f"resumed {out}: {', '.join(result.resumed)} finished earlier, not recomputed",
                      soft_wrap=True, highlight=False)

    console.print(summary_table(result.summary, title=f"RecoWorld: {users} users, {world.horizon_days:g} days"))
    for row in result.summary[result.summary["fallback_turns"] > 0].itertuples():
        console.print(f"{row.recommender}: {row.fallback_turns} turns decided by its fallback (summary.csv "
                      "fallback_turns)", soft_wrap=True, highlight=False)
    daily = daily_activity(result.trajectories, math.ceil(world.horizon_days))
    plot = plot_retention(result.summary, daily, out / "retention.png")
    console.print(f"trajectories: {out / 'trajectories'}  summary: {out / 'summary.csv'}  plot: {plot}")
    if world.user_backend == "llm":
        from recoworld.llm import shared_backend

        turns = result.trajectories.drop_duplicates(["recommender", "user_id", "step"])
        fallbacks = int(turns["llm_fallback"].sum())
        console.print(f"{shared_backend(world.llm).usage.describe()}; {fallbacks} of {len(turns)} turns "
                      "fell back to the parametric user", soft_wrap=True, highlight=False)
    elif judge or any(name in LLM_AGENTS for name in names):  # LLM recommenders and the judge share it
        from recoworld.llm import shared_backend

        console.print(shared_backend(world.llm).usage.describe(), soft_wrap=True, highlight=False)
    if result.stopped:
        console.print(f"[yellow]stopped early:[/yellow] {result.stopped}")


@app.command()
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="training config (YAML), e.g. configs/ppo_small.yaml")] = None,
    out: Annotated[Path, typer.Option(help="output directory: checkpoints, curve, plot")] = Path("runs/train"),
    iterations: Annotated[int | None, typer.Option(help="override the PPO iteration budget")] = None,
    num_env_runners: Annotated[int | None, typer.Option(help="override the number of remote env runners")] = None,
    seed: Annotated[int | None, typer.Option(help="override the training seed")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint in --out")] = False,
    calibrated: Annotated[Path | None, typer.Option(help=CALIBRATED_HELP)] = None,
) -> None:
    """Train a PPO recommender (Ray RLlib) on RecoWorld-v0 and compare it with the baselines.

    Ctrl-C or SIGTERM stops it cleanly (one line, exit code 130 or 143, Ray shut down); Ray's own log
    lines go to ray.log in --out."""
    try:
        from recoworld.rl.training import StopSignals, TrainConfig, format_table, kept, latest_checkpoint, local_ray
        from recoworld.rl.training import train as run

        cfg = TrainConfig.load(config, iterations=iterations, num_env_runners=num_env_runners, seed=seed,
                               calibrated=calibrated)
        _hold(ctx, out)
    except ImportError as err:
        raise _fail(RecoWorldError(f"training needs the rllib extra (pip install 'recoworld[rllib]'): {err}")) from None
    except (RecoWorldError, FileNotFoundError) as err:
        raise _fail(err) from None
    stop = StopSignals()
    try:
        with local_ray(cfg.num_env_runners, out / "ray.log", stop):
            result = run(cfg, out, resume=resume,
                         log=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
    except KeyboardInterrupt:
        import signal

        signum = stop.received or signal.SIGINT
        console.print(f"stopped by {signal.Signals(signum).name}; {kept(latest_checkpoint(out))}", markup=False,
                      highlight=False, soft_wrap=True)
        raise typer.Exit(code=128 + signum) from None
    except RecoWorldError as err:
        raise _fail(err) from None
    console.print(format_table(result.table), highlight=False)
    console.print(f"training time: {result.train_seconds:.0f} s  checkpoint: {result.checkpoint}  "
                  f"curve: {result.plot}\nuse it in a study: recoworld simulate --agents rllib:{result.checkpoint}")


@app.command()
def study(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="study spec (YAML), e.g. examples/creator_study.yaml")],
    out: Annotated[Path | None, typer.Option(help="output directory; default: spec `out`, else runs/<name>")] = None,
    address: Annotated[str | None, typer.Option(help="existing Ray cluster (e.g. 'auto'); default: local Ray")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray runtime")] = None,
    seed: Annotated[int | None, typer.Option(help="override the spec's seed")] = None,
    calibrated: Annotated[Path | None, typer.Option(help=CALIBRATED_HELP + "; replaces the spec's `calibrated:`")]
    = None,
) -> None:
    """Run a population study on Ray, sharded and checkpointed: rerun the same command to resume."""
    from recoworld.studies.spec import StudySpec

    try:
        cfg = StudySpec.from_yaml(spec, calibrated=calibrated)
        if seed is not None:
            cfg = _options(StudySpec, {"seed": "--seed"}, {**cfg.model_dump(), "seed": seed})
        _hold(ctx, cfg.out_dir(out))
        from recoworld.studies.report import ALL, write_report
        from recoworld.studies.runner import check_ray_options, run_study

        check_ray_options(address, num_cpus)  # before any work: a bad address fails in seconds, never hangs
    except ImportError as err:
        raise _fail(RecoWorldError(f"studies run on Ray (pip install 'recoworld[rllib]'): {err}")) from None
    except (RecoWorldError, FileNotFoundError) as err:
        raise _fail(err) from None
    from recoworld.evaluation.report import summary_table

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("planning the users", total=None)  # each shard draws its own
        try:
            result = run_study(cfg, out, address=address, num_cpus=num_cpus,
                               on_shard=lambda done, total: progress.update(task, completed=done, total=total,
                                                                            description="shards"))
        except RecoWorldError as err:
            raise _fail(err) from None
    setup = result.setup
    notes = [f"- {len(setup.users)} users in {setup.n_shards} shards of up to {cfg.shard_size}, "
             f"{cfg.world.horizon_days:g} days, seed {cfg.seed}; recommenders: {', '.join(cfg.recommenders)}"]
    if cfg.creator is not None:
        notes.append(f"- creator {cfg.creator.name!r}: {cfg.creator.items.count} new items on "
                     f"{setup.target_topic!r}, aimed at segment {cfg.creator.target_segment!r}")
    llm_users = cfg.world.user_backend == "llm"
    if llm_users:
        notes.append(f"- LLM users: {cfg.world.llm.backend} backend, model {cfg.world.llm.model or 'default'}, "
                     f"up to {cfg.world.llm.concurrency} requests in flight per shard")
    report, summary = write_report(result.trajectories, result.episodes, result.out, title=f"Study: {cfg.name}",
                          horizon_days=cfg.world.horizon_days,
                          target=cfg.creator.target_segment if cfg.creator else None, notes=notes,
                          llm_users=llm_users)
    overall = summary[summary["segment"] == ALL].assign(recommender=lambda s: s["recommender"] + "/" + s["arm"])
    console.print(summary_table(overall, title=f"Study {cfg.name}: {len(setup.users)} users"))
    from recoworld.evaluation.html_report import write_report as write_html

    console.print(f"shards run now: {result.shards_run} (the rest resumed from the checkpoint)  "
                  f"results: {result.out}  report: {report}  journeys: {write_html(result.out)}")


@app.command()
def fidelity(
    data: Annotated[Path, typer.Option(help=DATA_HELP)],
    embedding: Annotated[str, typer.Option(help=EMBEDDING_HELP)] = "auto",
    split: Annotated[str, typer.Option(help=SPLIT_HELP)] = "global",
    test_fraction: Annotated[float, typer.Option(help="share of interactions held out, by time")] = 0.2,
    negatives: Annotated[int, typer.Option(help="sampled negatives per user; 0 ranks every unseen item")] = 99,
    users: Annotated[int | None, typer.Option(help="evaluate at most this many users")] = None,
    llm_users: Annotated[int, typer.Option(help="also score LLM users on the first N users (slow); 0 = skip")] = 0,
    config: Annotated[Path | None, typer.Option(help="world config (YAML or JSON): choice model, LLM backend")] = None,
    calibrated: Annotated[Path | None, typer.Option(help=CALIBRATED_HELP + "; scored with its own split")] = None,
    passes: Annotated[int | None, typer.Option(help=PASSES_HELP)] = None,
    seed: Annotated[int, typer.Option(help="seed of the negatives, the simulated users and tie-breaks")] = 0,
    out: Annotated[Path, typer.Option(help="output directory: fidelity.csv, fidelity.json, "
                                           "fidelity_per_user.parquet")] = Path("runs/fidelity"),
) -> None:
    """How well simulated users, initialised from a real train log, rank the real held-out interactions.

    Every test user is accounted for: warm users (train history, new held-out items) and cold-start
    users (no train history, scored with the population's prior profile) are separate row groups of
    fidelity.csv, and fidelity.json holds the counts, the split and its leakage."""
    import json

    import pandas as pd
    import pyarrow as pa

    from recoworld.evaluation.fidelity import (
        DEFAULT_PASSES,
        FidelityConfig,
        default_scorers,
        eval_population,
        evaluate,
        fidelity_table,
        llm_scorer,
    )
    from recoworld.evaluation.simulation import load_world
    from recoworld.storage import write_parquet_atomic

    try:
        world = load_world(config)
        cfg = _options(FidelityConfig, {"n_negatives": "--negatives", "max_users": "--users", "seed": "--seed"},
                       {"n_negatives": negatives, "max_users": users, "seed": seed})
        if llm_users < 0:
            raise RecoWorldError(f"--llm-users {llm_users}: give 0 (no LLM users) or a positive number of users")
        if passes is not None and passes < 1:
            raise RecoWorldError(f"--passes {passes}: give at least 1 pass of shuffled slates")
        fitted = _calibrated(calibrated, config) if calibrated is not None else None
        real = _real_for(data, embedding, seed, fitted, calibrated, split=split, test_fraction=test_fraction)
        if fitted is not None:
            world, real.catalog, real.profiles = fitted.world, fitted.catalog, fitted.profiles
        world = _llm_ready(world, out, calls_model=llm_users > 0)
        population = eval_population(real.catalog, real.profiles, real.split.train, real.split.test, cfg)
        if not population.users:
            raise RecoWorldError(f"no test user to score ({population.describe()}); raise --test-fraction")
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise _fail(err) from None
    passes = DEFAULT_PASSES if passes is None else passes
    console.print(population.describe(), soft_wrap=True, highlight=False)
    evaluated = population.warm
    runs = [(default_scorers(real.catalog, world, repeats=passes), population.users)]
    llm = None
    if llm_users > 0:
        try:
            llm = llm_scorer(real.catalog, world)
            runs.append(([llm], evaluated[:llm_users]))
        except ImportError as err:
            message = f"LLM users need the local extra (pip install 'recoworld[local]'): {err}"
            raise _fail(RecoWorldError(message)) from None
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        tasks = {s.name: progress.add_task(f"{s.name:>26}", total=len(group))
                 for scorers, group in runs for s in scorers}
        for scorers, group in runs:
            try:
                results.append(evaluate(group, scorers, cfg, on_user=lambda name: _advance(progress, tasks[name])))
            except RecoWorldError as err:
                raise _fail(err) from None
    summary = pd.concat([r[0] for r in results], ignore_index=True)
    per_user = pd.concat([r[1] for r in results], ignore_index=True)
    console.print(fidelity_table(summary, cfg.k))
    if llm is not None:  # how many slates the model decided, and how many fell back to the parametric user
        console.print(f"LLM users: {dict(getattr(llm.simulator, 'stats', {}))}", highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "fidelity.csv", index=False)
    leak = real.split.leakage()
    (out / "fidelity.json").write_text(json.dumps({
        "users": population.counts, "passes": passes, "negatives": cfg.n_negatives, "seed": cfg.seed,
        "split": {"mode": real.split.mode, "test_fraction": test_fraction, "cutoff": real.split.cutoff,
                  "describe": real.split.describe(), "leakage": vars(leak)},
    }, indent=2) + "\n")
    write_parquet_atomic(pa.Table.from_pandas(per_user, preserve_index=False), out / "fidelity_per_user.parquet")
    console.print(f"summary: {out / 'fidelity.csv'}  users and split: {out / 'fidelity.json'}  "
                  f"per user: {out / 'fidelity_per_user.parquet'}")


VALIDATE_FLAGS = {"users": "--users", "days": "--days", "max_days": "--max-days", "agent": "--agent",
                  "candidates": "--candidates", "passes": "--passes", "fidelity_users": "--fidelity-users",
                  "llm_users": "--llm-users", "llm_max_steps": "--llm-turns", "continuation": "--continuation",
                  "seed": "--seed"}


@app.command()
def validate(
    data: Annotated[Path, typer.Option(help=DATA_HELP)],
    embedding: Annotated[str, typer.Option(help=EMBEDDING_HELP)] = "auto",
    users: Annotated[int, typer.Option(help="real users compared (drawn with the seed)")] = 200,
    days: Annotated[float | None, typer.Option(help="simulated horizon; default: the log's span, capped")] = None,
    max_days: Annotated[float, typer.Option(help="cap of the default horizon, in days")] = 60.0,
    agent: Annotated[str, typer.Option(help="the recommender the simulated users meet (random: uniform exposure, "
                                            "what a log without impressions identifies)")] = "random",
    candidates: Annotated[str, typer.Option(help="uniform: candidates drawn uniformly from the catalog; world: "
                                                 "each world's retrieval")] = "uniform",
    passes: Annotated[int | None, typer.Option(help=PASSES_HELP)] = None,
    fidelity_users: Annotated[int, typer.Option(help="users of the held-out ranking fidelity")] = 100,
    llm_users: Annotated[int, typer.Option(help="also simulate N LLM users (world config's llm); 0 = skip")] = 0,
    llm_turns: Annotated[int, typer.Option(help="turns per LLM user")] = 20,
    continuation: Annotated[bool, typer.Option(help="out of sample, each simulated user starts where they stood "
                                                    "at the cutoff (churned, or back after the residual gap of "
                                                    "the world's return model); off: everyone opens a session "
                                                    "on day 0")] = True,
    config: Annotated[Path | None, typer.Option(help="world config (YAML or JSON) of the default world")] = None,
    calibrated: Annotated[Path | None, typer.Option(help=CALIBRATED_HELP + "; compared next to the default")]
    = None,
    split: Annotated[str, typer.Option(help=SPLIT_HELP + "; a --calibrated world's own split wins")] = "global",
    test_fraction: Annotated[float, typer.Option(help="share of interactions after the cutoff: the out-of-sample "
                                                     "period")] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the users drawn, the simulation and the negatives")] = 0,
    out: Annotated[Path, typer.Option(help="output directory: validity.csv, validity.png (out of sample), "
                                           "validity_in_sample.png")] = Path("runs/validate"),
) -> None:
    """Compare simulated and real users on the same users and items: stylized facts, distances, plots.

    The headline column is out of sample: the period after the split's cutoff, which neither the
    calibration nor the profiles saw, simulated from the cutoff. The in-sample column (the train
    period, which calibration fitted) is second."""
    from recoworld.evaluation.fidelity import DEFAULT_PASSES
    from recoworld.evaluation.simulation import load_world
    from recoworld.validity import SimWorld, ValidityConfig, validity_table, write_validity
    from recoworld.validity import validate as run

    try:
        cfg = _options(ValidityConfig, VALIDATE_FLAGS, {
            "users": users, "days": days, "max_days": max_days, "agent": agent, "candidates": candidates,
            "passes": DEFAULT_PASSES if passes is None else passes, "fidelity_users": fidelity_users,
            "llm_users": llm_users, "llm_max_steps": llm_turns, "continuation": continuation, "seed": seed})
        fitted = _calibrated(calibrated, None) if calibrated is not None else None
        real = _real_for(data, embedding, seed, fitted, calibrated, split=split, test_fraction=test_fraction)
        default = _llm_ready(load_world(config), out, calls_model=llm_users > 0)  # LLM users run on its llm
        worlds = [SimWorld("default", default, real.catalog, real.profiles)]
        if fitted is not None:
            worlds.append(SimWorld("calibrated", fitted.world, fitted.catalog, fitted.profiles))
        with console.status("validating") as status:
            result = run(real, worlds, cfg, progress=lambda msg: (status.update(msg), _note(msg)))
    except ImportError as err:
        raise _fail(RecoWorldError(f"LLM users need the local extra (pip install 'recoworld[local]'): {err}")) from None
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise _fail(err) from None
    console.print(validity_table(result))
    for note in result.notes:
        console.print(note, soft_wrap=True, highlight=False)
    if llm_users:
        from recoworld.llm import shared_backend

        console.print(shared_backend(worlds[0].world.llm).usage.describe(), soft_wrap=True, highlight=False)
    csv, png, png_in = write_validity(result, out)
    console.print(f"table: {csv}  plots: {png} (out of sample), {png_in} (in sample)")


@app.command()
def calibrate(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help=DATA_HELP)],
    out: Annotated[Path, typer.Option(help="output directory: world.yaml, profiles.jsonl, catalog.parquet, "
                                           "calibration.json")] = Path("runs/calibrated"),
    embedding: Annotated[str, typer.Option(help=EMBEDDING_HELP)] = "auto",
    split: Annotated[str, typer.Option(help=SPLIT_HELP + "; only the train part is fitted")] = "global",
    test_fraction: Annotated[float, typer.Option(help="share of interactions held out, by time")] = 0.2,
    budget: Annotated[int, typer.Option(help="evaluation budget of the simulated-moments fit")] = 60,
    attention: Annotated[str, typer.Option(help=ATTENTION_HELP)] = "none",
    drift: Annotated[str, typer.Option(help=DRIFT_HELP)] = "none",
    seed: Annotated[int, typer.Option(help="seed of the sampled negatives and the simulated users")] = 0,
) -> None:
    """Fit the parametric user to a real log; write a world config, the users and the fit report."""
    from recoworld.calibration import CalibrationConfig, save_calibration
    from recoworld.calibration import calibrate as run
    from recoworld.calibration.report import calibration_table, fit_check_table, folds_table

    try:
        cfg = _options(CalibrationConfig, {**{f"data.{k}": v for k, v in {**DATA_FLAGS, **TIME_FLAGS}.items()},
                                           "moment_budget": "--budget", "seed": "--seed"}, {
            "data": {"path": data, "representation": {"embedding": embedding, **_time(attention, drift)},
                     "split": split, "test_fraction": test_fraction, "seed": seed},
            "moment_budget": budget, "seed": seed})
        _hold(ctx, out)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("fitting choices, sessions, then simulated moments", total=cfg.moment_budget)
            def moments(n: int, best: float) -> None:
                progress.update(task, completed=n, description=f"simulated moments (best objective {best:.3g})")
                if n % 10 == 0:
                    _note(f"simulated moments: {n} evaluations, best objective {best:.3g}")

            result = run(cfg, on_eval=moments)
        path = save_calibration(result, out)
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise _fail(err) from None
    console.print(calibration_table(result.report))
    console.print(folds_table(result.report))
    console.print(fit_check_table(result.report))
    for warning in result.report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"calibrated world: {path} (world.yaml, profiles.jsonl, catalog.parquet, calibration.json); "
                  f"use it: recoworld simulate --calibrated {path}")


@app.command()
def transfer(
    data: Annotated[Path, typer.Option(help=DATA_HELP)],
    out: Annotated[Path, typer.Option(help="output directory: transfer.csv, transfer.json, transfer.png")]
    = Path("runs/transfer"),
    calibrated: Annotated[Path | None, typer.Option(help=CALIBRATED_HELP + "; fitted on this log with a global "
                                                   "split (default: calibrate here, on the past only)")] = None,
    embedding: Annotated[str, typer.Option(help=EMBEDDING_HELP)] = "auto",
    test_fraction: Annotated[float, typer.Option(help="share of the log's time after the cutoff, by timestamp "
                                                      "quantile (a --calibrated world's own cutoff wins)")] = 0.2,
    attention: Annotated[str, typer.Option(help=ATTENTION_HELP)] = "none",
    drift: Annotated[str, typer.Option(help=DRIFT_HELP)] = "none",
    panel: Annotated[str | None, typer.Option(help="comma-separated panel recommenders (default: all of "
                                                   "recoworld.agents.log_rankers.PANEL)")] = None,
    users: Annotated[int | None, typer.Option(help="judge at most N users (drawn with the seed)")] = None,
    days: Annotated[float | None, typer.Option(help="simulated horizon; default: the log's future, capped")] = None,
    max_days: Annotated[float, typer.Option(help="cap of the default horizon, in days")] = 60.0,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples of users behind the intervals")] = 1000,
    budget: Annotated[int, typer.Option(help="evaluation budget of the calibration's simulated-moments fit")] = 60,
    circularity: Annotated[bool, typer.Option(help="also calibrate a world whose mf representation is learned "
                                                   "from one half of the users, judged on the other half (a "
                                                   "simulator living in the ALS space may favour ALS)")] = True,
    seed: Annotated[int, typer.Option(help="seed of the calibration, the panel, the simulated users")] = 0,
) -> None:
    """Does the simulator order recommenders as the real future does? A panel trained on the past, scored on
    the real users' future (NDCG@k) and by simulated users (consumptions); rank correlation with CIs."""
    from recoworld.calibration import CalibrationConfig, load_calibration
    from recoworld.calibration import calibrate as fit
    from recoworld.config import WorldConfig
    from recoworld.data import DataConfig, prepare_world
    from recoworld.data.items import user_halves
    from recoworld.evaluation.transfer import (
        SimulatedWorld,
        TransferConfig,
        run_transfer,
        transfer_table,
        write_transfer,
    )

    try:
        _writable_dir(out, "--out")
        names = [p.strip() for p in panel.split(",") if p.strip()] if panel is not None else None
        cfg = _options(TransferConfig, {"panel": "--panel", "max_users": "--users", "days": "--days",
                                        "max_days": "--max-days", "bootstrap": "--bootstrap", "seed": "--seed"},
                       {"max_users": users, "days": days, "max_days": max_days, "bootstrap": bootstrap, "seed": seed,
                        **({"panel": names} if names is not None else {})})
        fitted = load_calibration(calibrated) if calibrated is not None else None
        if fitted is not None:  # its own cutoff wins: a later one would judge it on what it was fitted to
            fit_data = fitted.report.get("data", {})
            if fit_data.get("split") != "global":
                raise ConfigError(f"--calibrated {calibrated}: it was fitted on a {fit_data.get('split', 'unknown')} "
                                  "split; transfer needs a global one (recoworld calibrate --split global), or leave "
                                  "--calibrated out")
            test_fraction = float(fit_data.get("test_fraction", test_fraction))
        data_cfg = _options(DataConfig, {**DATA_FLAGS, **TIME_FLAGS}, {
            "path": data, "split": "global", "test_fraction": test_fraction, "seed": seed,
            "representation": {"embedding": embedding, **_time(attention, drift)}})
        with console.status(f"loading {data}"):
            real = prepare_world(data_cfg)
        console.print(real.describe(), highlight=False)
        if fitted is None:
            _note("calibrating on the past (choices, sessions, simulated moments)")
            with console.status("calibrating on the past (choices, sessions, simulated moments)"):
                fitted = fit(_options(CalibrationConfig, {"moment_budget": "--budget"},
                                      {"data": data_cfg, "moment_budget": budget, "seed": seed}))
        default = WorldConfig(catalog={"n_items": len(real.catalog)})
        worlds = [SimulatedWorld("calibrated", fitted.world, fitted.catalog, fitted.profiles),
                  SimulatedWorld("default", default, real.catalog, real.profiles)]
        if circularity and "mf" in real.catalog.metadata.get("embedding", "").split("+"):
            half = data_cfg.model_copy(update={"representation": data_cfg.representation.model_copy(
                update={"mf_user_half": 0})})
            _note("calibrating a world whose representation half of the users learned")
            with console.status("calibrating a world whose representation half of the users learned"):
                apart = fit(_options(CalibrationConfig, {"moment_budget": "--budget"},
                                     {"data": half, "moment_budget": budget, "seed": seed}))
            others = real.split.train["user_id"].unique()
            judged = frozenset(u for u, h in zip(others, user_halves(others, data_cfg.representation.seed)) if h == 1)
            worlds.insert(1, SimulatedWorld("calibrated, representation apart", apart.world, apart.catalog,
                                            apart.profiles, judged))
        elif circularity:
            console.print(f"circularity check skipped: the {real.catalog.metadata.get('embedding')} representation "
                          "is not learned from users", highlight=False)
        genres = [list(g) for g in real.dataset.items["genres"]]
        with console.status("transfer") as status:
            result = run_transfer(real.split, real.catalog, genres, worlds, cfg,
                                  progress=lambda msg: (status.update(msg), console.log(msg)))
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise _fail(err) from None
    console.print(transfer_table(result))
    for note in result.notes:
        console.print(note, soft_wrap=True, highlight=False)
    csv, js, png = write_transfer(result, out)
    console.print(f"table: {csv}  agreement: {js}  plot: {png}")


@app.command()
def distill(
    ctx: typer.Context,
    from_: Annotated[Path | None, typer.Option("--from", help="a `recoworld simulate --user-backend llm ... --out "
                                                             "RUN` folder: the LLM decisions to distill")] = None,
    out: Annotated[Path, typer.Option(help="output directory: world.yaml, profiles.jsonl, catalog.parquet, "
                                           "calibration.json, agreement.csv, agreement.png")] = Path("runs/distilled"),
    holdout: Annotated[float, typer.Option(help="share of the users held out of the fit, for the agreement report")]
    = 0.3,
    boot: Annotated[int, typer.Option(min=10, help="bootstrap resamples of the held-out users")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the held-out draw and the bootstrap")] = 0,
    min_decisions: Annotated[int, typer.Option(min=1, help="fewest LLM item decisions to fit on (fewer: an error)")]
    = 200,
    rank_check: Annotated[bool, typer.Option("--rank-check", help="rank the run's recommenders (4 or more) under "
                                             "the LLM users and the surrogate, report Spearman's rho (ranking.csv); "
                                             "without the flag, done when the run has 4 or more")] = False,
    collect: Annotated[int | None, typer.Option(min=1, help="instead of --from: run LLM users of --config's world "
                                                "in batches (under OUT/collect) until N decisions are logged or its "
                                                "llm budget stops them, then fit")] = None,
    config: Annotated[Path | None, typer.Option(help="--collect: the world config (YAML/JSON); its llm block sets "
                                                     "the model, budget and concurrency")] = None,
    agents: Annotated[str, typer.Option(help="--collect: comma-separated recommenders the LLM users meet")]
    = "random,popular,greedy,instruct",
    batch_users: Annotated[int, typer.Option(min=1, help="--collect: users in the first batch")] = 8,
    max_users: Annotated[int, typer.Option(min=1, help="--collect: most users in all")] = 10_000,
    neural: Annotated[bool, typer.Option("--neural", help="also train the small torch choice model and add its "
                                         "column (item-level measures) to the agreement report")] = False,
) -> None:
    """Fit the parametric user to an LLM user's decisions (a fast surrogate) and report their agreement."""
    from recoworld.calibration.agreement import table
    from recoworld.calibration.distill import distill_run

    if (from_ is None) == (collect is None):
        raise _fail(ConfigError("give either --from RUN or --collect N --config WORLD"))
    try:
        _hold(ctx, out)
        if collect is not None:
            from recoworld.agents import check_recommender_names
            from recoworld.calibration.distill import collect as collect_runs
            from recoworld.evaluation.simulation import load_world
            from recoworld.llm.health import check_server

            world = load_world(config, user_backend="llm")
            names = [a.strip() for a in agents.split(",") if a.strip()]
            check_recommender_names(names)
            check_server(world.llm)

            def progress(run: Path, n: int) -> None:
                console.print(f"{run}: {n} LLM decisions so far (of {collect})", highlight=False)

            runs, stopped = collect_runs(world, collect, out, names, seed, batch_users, max_users, on_batch=progress)
            if stopped:
                console.print(f"[yellow]collection stopped early:[/yellow] {stopped}")
            from_ = runs  # type: ignore[assignment]
        result, report = distill_run(from_, out, holdout, seed, boot, min_decisions, rank_check or None,
                                     neural)
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise _fail(err) from None
    console.print(table(report), markup=False, highlight=False)
    if (out / "ranking.csv").is_file() and "ranking" in result.report:
        import pandas as pd

        from recoworld.calibration.ranking import table as ranking_table

        console.print("policy ranking, LLM users vs surrogate (Spearman's rho, 95% bootstrap CI over users):")
        console.print(ranking_table(pd.read_csv(out / "ranking.csv")), markup=False, highlight=False)
    console.print(f"distilled world: {out} ({result.report['decisions']['fit']} decisions fitted, "
                  f"{result.report['decisions']['held_out']} held out); use it: recoworld simulate --calibrated {out} "
                  f"(its users), or `user_backend: surrogate` with `surrogate: {out}` in a world config (any users)")


@app.command()
def bench(
    ctx: typer.Context,
    list_: Annotated[bool, typer.Option("--list", help="list the scenarios (name, version, description)")] = False,
    scenarios: Annotated[str, typer.Option(help="comma-separated scenarios (see --list)")] = "retention-30d",
    agents: Annotated[str, typer.Option(help="comma-separated recommenders: names, module:Class, file.py:Class")]
    = "random,popular,greedy,diverse,instruct",
    out: Annotated[Path, typer.Option(help="output directory: results.json, leaderboard.md, quadrant.png and "
                                           "one folder per scenario")] = Path("runs/bench"),
    data: Annotated[Path | None, typer.Option(help="real-log: " + DATA_HELP + "; or a `recoworld calibrate` "
                                                   "folder")] = None,
    users: Annotated[int | None, typer.Option(min=1, help="users per scenario instead of its own number "
                                                          "(changes its config hash)")] = None,
    config: Annotated[Path | None, typer.Option(help="world config whose llm block configures llm-users-small")]
    = None,
    llm_base_url: Annotated[str | None, typer.Option(help="llm-users-small: OpenAI-compatible endpoint")] = None,
    llm_model: Annotated[str | None, typer.Option(help="llm-users-small: model name on the server")] = None,
    llm_cache: Annotated[str | None, typer.Option(help="llm-users-small: write, read, replay or off")] = None,
    overwrite: Annotated[bool, typer.Option(help="a scenario folder holds another run: replace it")] = False,
) -> None:
    """RecoWorld-Bench: run versioned, seeded scenarios; write results.json, leaderboard.md and quadrant.png."""
    import time

    from recoworld.bench import SCENARIOS, run_bench
    from recoworld.bench.runner import check_inputs

    if list_:
        for s in SCENARIOS.values():
            console.print(f"{s.name:<18} v{s.version:<5} {s.description}", soft_wrap=True, highlight=False)
        return
    try:
        from recoworld.evaluation.simulation import load_world

        names = [s.strip() for s in scenarios.split(",") if s.strip()]
        names_agents = [a.strip() for a in agents.split(",") if a.strip()]
        llm_overrides = {k: v for k, v in {"base_url": llm_base_url, "model": llm_model, "cache": llm_cache}.items()
                         if v is not None}
        if llm_base_url or llm_model:
            llm_overrides["backend"] = "openai"
        llm = load_world(config, llm=llm_overrides or None).llm
        check_inputs(names, names_agents, data, llm)
        _hold(ctx, out)
        start = time.perf_counter()
        result = run_bench(names, names_agents, out, data=data, llm=llm, n_users=users, overwrite=overwrite,
                           log=lambda msg: console.print(msg, soft_wrap=True, highlight=False))
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise _fail(err) from None
    console.print((out / "leaderboard.md").read_text(), soft_wrap=True, highlight=False, markup=False)
    console.print(f"{len(result.runs)} scenario(s) x {len(result.agents)} agent(s) in "
                  f"{time.perf_counter() - start:.0f} s; results: {out / 'results.json'}  leaderboard: "
                  f"{out / 'leaderboard.md'}  quadrant plot: {out / 'quadrant.png'}", soft_wrap=True, highlight=False)
    from recoworld.evaluation.html_report import write_report as write_html

    for run in result.runs:  # one HTML report (summary, plots, journeys) per scenario folder
        try:
            console.print(f"report {run.scenario.name}: {write_html(run.out)}", soft_wrap=True, highlight=False)
        except RecoWorldError as err:
            console.print(f"[yellow]no report for {run.scenario.name}:[/yellow] {err}", soft_wrap=True)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder: simulate --out, a bench scenario folder, a study")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write; default RUN_DIR/report.html")] = None,
    max_users: Annotated[int, typer.Option(min=1, help="users per recommender in the journey explorer")] = 100,
    catalog: Annotated[Path | None, typer.Option(help="catalog Parquet file for item titles and topics; default: "
                                                      "rebuilt from the run's config")] = None,
) -> None:
    """Write one self-contained HTML report of a run (summary, plots, segments, user journey explorer)."""
    from recoworld.evaluation.html_report import write_report

    try:
        if out is not None and out.is_dir():
            raise RecoWorldError(f"--out {out} is a directory; give the HTML file to write, e.g. {out / 'report.html'}")
        path = write_report(run_dir, out, max_users=max_users, catalog=catalog)
    except RecoWorldError as err:
        raise _fail(err) from None
    except OSError as err:
        raise _fail(RecoWorldError(f"cannot write the report: {err.strerror or type(err).__name__} "
                                   f"({err.filename or out})")) from None
    console.print(f"report: {path}", soft_wrap=True, highlight=False)


@app.command("catalog")
def make_catalog(
    out: Annotated[Path, typer.Option(help="Parquet file to write")] = Path("catalog.parquet"),
    n_items: Annotated[int, typer.Option(help="number of items")] = 3000,
    seed: Annotated[int, typer.Option(help="catalog seed")] = 0,
) -> None:
    """Generate a synthetic catalog and save it as Parquet."""
    from recoworld.catalog import generate_catalog
    from recoworld.config import CatalogConfig

    try:
        if out.is_dir():
            raise RecoWorldError(f"--out {out} is a directory; give the Parquet file to write, e.g. "
                                 f"{out / 'catalog.parquet'}")
        _writable_dir(out.parent, "--out", given=out)
        cat = generate_catalog(_options(CatalogConfig, {"n_items": "--n-items", "seed": "--seed"},
                                        {"n_items": n_items, "seed": seed}))
        path = cat.to_parquet(out)
    except RecoWorldError as err:
        raise _fail(err) from None
    except OSError as err:
        raise _fail(RecoWorldError(f"--out {out}: cannot write there ({err.strerror or type(err).__name__})")) \
            from None
    console.print(f"wrote {len(cat)} items, {cat.n_topics} topics to {path}")


def main() -> None:
    """The console script: the app, with any local model process stopped on Ctrl-C and at the end.
    SIGTERM is handled as Ctrl-C, so `finally` blocks run (a study shuts its Ray down).

    Ctrl-C can leave a worker thread blocked on the model's reply, and `asyncio.run` waits
    for that thread before the exception reaches us. Stopping the model first, in the signal
    handler, closes the pipe, so the run exits at once instead of after the reply.
    """
    import signal

    from recoworld.llm.supervisor import close_all
    from recoworld.studies.ray_cleanup import STOP_REQUESTED

    def interrupt(signum: int, frame: object) -> None:
        STOP_REQUESTED.set()
        close_all()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        app()
    finally:
        close_all()


if __name__ == "__main__":
    main()
