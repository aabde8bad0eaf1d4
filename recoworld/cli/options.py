"""The option groups that several commands share, written once: the run's vocabulary, data, users, LLM and output.

Each option is an `Annotated` type, so a command declares `data: DataOption` and gets the same flag,
help and checks as every other command that reads a real log. Where a command adds to the help, the group's
`*_option(more)` function returns the same option with `more` appended. A flag means one thing in every
command: `--agents` the recommenders, `--users` how many users the command simulates or scores, `--seed`
the seed every random draw derives from, `--days` the simulated horizon, `--llm*` the chat model.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from recoworld.cli.common import fail, names, validated
from recoworld.errors import ConfigError

# ---- the run's vocabulary: --agents, --users, --seed, --days ----
AGENTS_HELP = "comma-separated recommenders: built-in names, module:Class or file.py:Class (labelled by their `name`)"
USERS_HELP = "number of users"
SEED_HELP = "seed of every random draw"
DAYS_HELP = "simulated horizon in days"


def agents_option(more: str = "") -> Any:
    return typer.Option("--agents", help=AGENTS_HELP + more)


def users_option(more: str = "") -> Any:
    return typer.Option("--users", help=USERS_HELP + more)


def seed_option(more: str = "") -> Any:
    return typer.Option("--seed", help=SEED_HELP + more + "; the same seed gives the same results")


def days_option(more: str = "") -> Any:
    return typer.Option("--days", help=DAYS_HELP + more)


MaxDaysOption = Annotated[float, typer.Option(help="cap of the default horizon, in days")]


def one_agent(agents: str) -> str:
    """The one recommender of a command that compares worlds under a single feed (`validate`)."""
    given = names(agents)
    if len(given) != 1:
        raise ConfigError(f"--agents {agents!r}: this command runs one recommender; name exactly one")
    return given[0]


# ---- data: a real log, its item representation, its split and its time ----
DATA_HELP = (
    "real dataset: a MovieLens 100K/1M folder (grouplens.org), RecBole atomic files, or "
    "interactions.<csv|tsv|jsonl|parquet>; catalog and users come from its train split"
)
EMBEDDING_HELP = (
    "item representation for --data: auto (= mf, factors learned from the log's behaviour), mf, "
    "sentence, tfidf, features, mf+tfidf, mf+sentence"
)
SPLIT_HELP = (
    "global (default): one time cutoff, nothing fitted sees an interaction after it; per_user: each "
    "user's latest interactions held out, which LEAKS other users' later interactions into train (Ji et "
    "al., TOIS 2023)"
)
ATTENTION_HELP = (
    "item popularity: none (all-time counts of the past, a world static in time), fit (attention "
    "decayed with a half-life fitted on the past: by the choice model's validation likelihood when "
    "calibrating), or a half-life in days"
)
DRIFT_HELP = (
    "users' interests: none (every past interaction weighs alike), fit (recent interactions weigh more, "
    "with a half-life fitted on the past where the log shows drift), or a half-life in days"
)
PASSES_HELP = (
    "passes of shuffled slates behind the simulated AUC (users click a few percent of what they see, so "
    "few passes measure the pass count); default: DEFAULT_PASSES of recoworld.evaluation.fidelity (200), "
    "the same in fidelity and validate"
)
#: DataConfig field -> the flag that sets it, so a bad value is an error naming the flag.
DATA_FLAGS = {
    "path": "--data",
    "representation": "--embedding",
    "seed": "--seed",
    "split": "--split",
    "test_fraction": "--test-fraction",
    "representation.popularity_half_life_days": "--attention",
    "representation.interest_half_life_days": "--drift",
    "representation.embedding": "--embedding",
}

DataOption = Annotated[Path, typer.Option(help=DATA_HELP)]
EmbeddingOption = Annotated[str, typer.Option(help=EMBEDDING_HELP)]
AttentionOption = Annotated[str, typer.Option(help=ATTENTION_HELP)]
DriftOption = Annotated[str, typer.Option(help=DRIFT_HELP)]
PassesOption = Annotated[int | None, typer.Option(help=PASSES_HELP)]


def split_option(more: str = "") -> Any:
    return typer.Option(help=SPLIT_HELP + more)


def test_fraction_option(more: str = "") -> Any:
    return typer.Option(help="share of the log held out after the cutoff, by time" + more)


def data_config(
    data: Path,
    embedding: str,
    seed: int,
    *,
    split: str | None = None,
    test_fraction: float | None = None,
    attention: str = "none",
    drift: str = "none",
) -> Any:
    """The `recoworld.data.DataConfig` of the data flags (attention and drift: 'none', 'fit' or days), checked."""
    from recoworld.data import DataConfig

    def half_life(flag: str) -> object:
        return {"fit": "fit", "none": None}.get(flag, flag)

    split_fields = {k: v for k, v in {"split": split, "test_fraction": test_fraction}.items() if v is not None}
    time = {"popularity_half_life_days": half_life(attention), "interest_half_life_days": half_life(drift)}
    return validated(
        DataConfig,
        DATA_FLAGS,
        {"path": data, "seed": seed, **split_fields, "representation": {"embedding": embedding, **time}},
    )


# ---- users: a calibrated world's (catalog, users, world config) ----
CALIBRATED_HELP = "a calibrated world (the --out of `recoworld calibrate`): its world config, catalog and users"


def calibrated_option(more: str = "") -> Any:
    return typer.Option(help=CALIBRATED_HELP + more)


CalibratedOption = Annotated[Path | None, calibrated_option()]

# ---- LLM: the chat model behind LLM users, LLM recommenders and the judge ----
LLMBackendOption = Annotated[
    str | None,
    typer.Option(
        "--llm", help="LLM backend: local (Gemma 270M in-process) or openai; --llm-base-url alone means openai"
    ),
]
LLMBaseURLOption = Annotated[
    str | None, typer.Option(help="OpenAI-compatible endpoint (key: $OPENAI_API_KEY); selects --llm openai")
]
LLMModelOption = Annotated[str | None, typer.Option(help="model name on the server; the GGUF file for local")]
LLMCacheOption = Annotated[
    str | None,
    typer.Option(
        help="record/replay cache: write, read, replay (cache only, no server) or off; default file: <out>/llm-cache"
    ),
]
LLMBudgetOption = Annotated[float | None, typer.Option(help="stop at this LLM cost (USD)")]
LLMConcurrencyOption = Annotated[int | None, typer.Option(help="LLM requests in flight at once")]
#: The --llm* flags, in the order `--help` lists them, by the parameter name `llm_overrides` gives each.
LLM_FLAGS: dict[str, Any] = {
    "backend": ("llm", LLMBackendOption),
    "base_url": ("llm_base_url", LLMBaseURLOption),
    "model": ("llm_model", LLMModelOption),
    "cache": ("llm_cache", LLMCacheOption),
    "budget": ("llm_budget", LLMBudgetOption),
    "concurrency": ("llm_concurrency", LLMConcurrencyOption),
}


def llm_overrides(
    backend: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    cache: str | None = None,
    budget: float | None = None,
    concurrency: int | None = None,
) -> dict[str, object] | None:
    """The `llm` block the LLM flags put over a world config's (None: no flag given), one rule for every command.

    A flag wins over the config. --llm-base-url is the endpoint of an OpenAI-compatible server, so it selects
    the openai backend when --llm is not given; with --llm local it is an error naming --llm-base-url, since
    the local model has no endpoint. Every other flag sets its field of whichever backend runs.
    """
    if base_url is not None and backend not in (None, "openai"):
        raise ConfigError(
            f"--llm-base-url {base_url!r} is an OpenAI-compatible endpoint, but --llm is {backend!r}; "
            "give --llm openai or drop --llm-base-url"
        )
    if base_url is not None:
        backend = "openai"
    given = {
        "backend": backend,
        "base_url": base_url,
        "model": model,
        "cache": cache,
        "budget_usd": budget,
        "concurrency": concurrency,
    }
    return {k: v for k, v in given.items() if v is not None} or None


def with_llm_flags(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the six --llm* flags after its own options, handed to it as one `llm_flags` argument
    (`llm_overrides` of the flags: None when none is given).

    Declared once here, so every command that talks to a model takes the same flags by the same rule.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "llm_flags"]
    flags = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option)
        for name, option in LLM_FLAGS.values()
    ]

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        given = {field: kwargs.pop(name) for field, (name, _) in LLM_FLAGS.items()}
        try:
            flags = llm_overrides(**given)
        except ConfigError as err:
            raise fail(err) from None
        command(*args, llm_flags=flags, **kwargs)

    run.__signature__ = signature.replace(parameters=[*own, *flags])  # type: ignore[attr-defined]
    return run


# ---- output (each command's --out says what it writes) ----
OverwriteOption = Annotated[bool, typer.Option(help="--out holds another run: remove its results and start over")]
