"""`BatchedEnvRunner`: RLlib's `SingleAgentEnvRunner` sampling loop with the per-user work done once per sample.

Why: with 1,024 users per env runner, RLlib's `_sample` spends about 45% of sampling handling each user's step one
by one: unbatching observations and actions, `SingleAgentEpisode.add_env_step`, per-user callbacks, then `cut` and
`to_numpy` of every chunk. Here the vector env is stepped with the batched arrays as before (the same forward passes
on the same batches, the same `GetActions` draws in the same order), each step's arrays are kept, and at the end of
`sample` each user's episode chunks are built from slices of them: a numpy'd `SingleAgentEpisode` per chunk, its
buffers written in bulk, and the continuation RLlib's `cut` would leave for the next sample.

What `sample` returns equals RLlib's runner bit for bit (tests/test_env_runner.py): the same chunks in the same
order (done episodes in the order they ended, then the ongoing ones by user), each with the same observations,
actions, rewards, infos, extra model outputs (logits, log-probabilities, weights' sequence number), lookback
buffers, dtypes, flags, `t_started` and ids that carry across chunk boundaries; the same step and episode counts in
the metrics training reads. RLlib's own loop still runs where this one does not apply: episode-count sampling,
random actions, a runner without a module, and a sample of 0 steps.

It needs `streamline`'s env-to-module pipeline (`LastObservationsToBatch`: the forward batch is the env's batched
observation, so the runner builds it from that array) and no per-episode callbacks (there are no per-user steps to
call them at); it says so at construction otherwise. Not timed per step: the env-to-module pipeline's timer
(the batch is one array conversion).
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import tree  # dm-tree, which RLlib uses for nested observations
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.connector_pipeline_v2 import ConnectorPipelineV2
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import _REWARDS_BOX_SPACE, SingleAgentEpisode
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer
from ray.rllib.utils.metrics import MODULE_TO_ENV_CONNECTOR, RLMODULE_INFERENCE_TIMER, WEIGHTS_SEQ_NO
from ray.rllib.utils.spaces.space_utils import unbatch
from ray.rllib.utils.torch_utils import convert_to_torch_tensor

from recoworld.rl.connectors import LastObservationsToBatch

if TYPE_CHECKING:
    from ray.rllib.algorithms.ppo import PPOConfig

#: RLlib's per-episode callbacks, which `_sample` makes for every user at every step.
EPISODE_CALLBACKS = ("on_episode_created", "on_episode_start", "on_episode_step", "on_episode_end")


def _batched(head: list[Any], rows: np.ndarray) -> np.ndarray:
    """What RLlib's `batch(head + list(rows))` (`to_numpy`'s `finalize`) returns for one leaf, without its per-item
    loop: items that are arrays are written into an array of the first item's dtype, scalars into `np.array`'s."""
    first = head[0] if head else rows[0]
    if isinstance(first, np.ndarray):
        dtype = first.dtype
    else:
        dtype = np.result_type(*(np.asarray(h).dtype for h in head), rows.dtype)
    out = np.empty((len(head) + len(rows), *rows.shape[1:]), dtype=dtype)
    for k, item in enumerate(head):
        out[k] = item
    out[len(head):] = rows
    return out


def _buffer(head: InfiniteLookbackBuffer | None, rows: Any, space: Any = None) -> InfiniteLookbackBuffer:
    """A finalized buffer: `head`'s items (its lookback and what the chunk already held), then `rows` (a structure
    of arrays, one row per step)."""
    if head is not None and not isinstance(head.data, list):
        raise ValueError("BatchedEnvRunner continues list-based episode chunks (RLlib's `cut`), got a numpy'd one")
    items: list[Any] = list(head.data) if head is not None else []
    lookback = head.lookback if head is not None else 0
    data: Any
    if isinstance(rows, np.ndarray):
        data = _batched(items, rows)
    elif _flat(rows):
        data = {k: _batched([item[k] for item in items], leaf) for k, leaf in rows.items()}
    else:
        data = tree.map_structure_with_path(lambda path, leaf: _batched([_at(item, path) for item in items], leaf),
                                            rows)
    return InfiniteLookbackBuffer(data=data, lookback=lookback, space=space)


def _flat(struct: Any) -> bool:
    """Whether `struct` is a dict of arrays (RecoWorld's observation), which skips dm-tree's generic walk."""
    return type(struct) is dict and all(isinstance(v, np.ndarray) for v in struct.values())


def _map(fn: Any, struct: Any) -> Any:
    """`tree.map_structure(fn, struct)`, quicker for an array or a dict of arrays."""
    if isinstance(struct, np.ndarray):
        return fn(struct)
    if _flat(struct):
        return {k: fn(v) for k, v in struct.items()}
    return tree.map_structure(fn, struct)


def _at(item: Any, path: tuple[Any, ...]) -> Any:
    """The leaf at `path` of one (possibly nested) item."""
    for key in path:
        item = item[key]
    return item


class BatchedEnvRunner(SingleAgentEnvRunner):
    """`SingleAgentEnvRunner` whose timestep sampling builds each user's episode chunks once per sample from the
    batched arrays of its steps (see the module docstring)."""

    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        pipeline = self._env_to_module
        pieces = ([type(c) for c in pipeline.connectors] if isinstance(pipeline, ConnectorPipelineV2)
                  else [type(pipeline)])
        if pieces != [LastObservationsToBatch]:
            raise ValueError("BatchedEnvRunner builds the forward batch from the env's batched observation, which "
                             "needs `streamline`'s env-to-module pipeline [LastObservationsToBatch], got "
                             f"{[p.__name__ for p in pieces]}")
        for name in EPISODE_CALLBACKS:
            if getattr(self.config, f"callbacks_{name}") is not None or any(
                    getattr(type(c), name) is not getattr(RLlibCallback, name) for c in self._callbacks):
                raise ValueError(f"BatchedEnvRunner makes no per-user `{name}` callbacks, but the config defines "
                                 f"one (callbacks_class or callbacks_{name})")
        if self.config.restart_failed_sub_environments:
            raise ValueError("BatchedEnvRunner does not recover from failed env steps "
                             "(config.restart_failed_sub_environments must be False)")

    def _sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None, explore: bool,
                random_actions: bool = False, force_reset: bool = False) -> list[SingleAgentEpisode]:
        if num_timesteps is None or num_timesteps <= 0 or random_actions or self.module is None:
            return super()._sample(num_timesteps=num_timesteps, num_episodes=num_episodes, explore=explore,
                                   random_actions=random_actions, force_reset=force_reset)
        if force_reset or self._needs_initial_reset:
            self._reset_envs_and_episodes(explore)
        start = [e for e in self._ongoing_episodes if e is not None]
        n = self.num_envs
        assert len(start) == n, "RLlib's reset gives every user an episode"
        fresh = np.array([not e.is_reset for e in start])  # users whose next observation starts an episode
        runners = self.config.num_env_runners or 1
        steps: list[tuple[Any, ...]] = []
        ts = 0
        while ts < num_timesteps:
            to_module = self._cached_to_module
            assert to_module is not None
            if explore:
                lifetime = (self.num_env_steps_sampled_lifetime // runners + ts) * runners
                with self.metrics.log_time(RLMODULE_INFERENCE_TIMER):
                    to_env = self.module.forward_exploration(to_module, t=lifetime)
            else:
                with self.metrics.log_time(RLMODULE_INFERENCE_TIMER):
                    to_env = self.module.forward_inference(to_module)
            to_env = self._module_to_env(rl_module=self.module, batch=to_env, episodes=start, explore=explore,
                                         shared_data=self._shared_data, metrics=self.metrics,
                                         metrics_prefix_key=(MODULE_TO_ENV_CONNECTOR,))
            actions = to_env.pop(Columns.ACTIONS)
            observations, rewards, terminateds, truncateds, infos = self._try_env_step(
                to_env.pop(Columns.ACTIONS_FOR_ENV, actions))
            now = time.perf_counter()
            ts += int(n - fresh.sum())
            steps.append((observations, actions, rewards, terminateds, truncateds, infos, to_env, fresh, now))
            fresh = (np.asarray(terminateds) | np.asarray(truncateds)) & ~fresh
            # what `LastObservationsToBatch` stacks from the episodes: every user's newest observation
            self._cached_to_module = {
                Columns.OBS: convert_to_torch_tensor(tree.map_structure(np.ascontiguousarray, observations))}
        done, ongoing, continuations = self._chunks(start, steps)
        self._done_episodes_for_metrics.extend(done)
        for episode in ongoing:
            self._ongoing_episodes_for_metrics[episode.id_].append(episode)
        self._ongoing_episodes = [*continuations]
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=ts)
        self._increase_sampled_metrics(ts, len(done))
        return done + ongoing

    def _chunks(self, start: list[SingleAgentEpisode], steps: list[tuple[Any, ...]]
                ) -> tuple[list[SingleAgentEpisode], list[SingleAgentEpisode], list[SingleAgentEpisode]]:
        """Each user's episode chunks of this sample from its steps' arrays: the done ones in the order they
        ended, the ongoing ones by user, and every user's continuation (what RLlib's `cut` returns)."""
        obs = tree.map_structure(_by_user, *[s[0] for s in steps])
        actions = tree.map_structure(_by_user, *[s[1] for s in steps])
        rewards, terminateds, truncateds = (_by_user(*[s[k] for s in steps]) for k in (2, 3, 4))
        infos = list(zip(*[s[5] for s in steps], strict=True))  # per user, per step
        extras = {k: _by_user(*[s[6][k] for s in steps]) for k in steps[0][6]}
        fresh = np.stack([s[7] for s in steps], axis=1)
        times = [s[8] for s in steps]
        seq_no = self._weights_seq_no
        n_steps = len(steps)
        lookback = self.config.episode_lookback_horizon
        done: list[tuple[int, int, SingleAgentEpisode]] = []
        ongoing, continuations = [], []
        for i, episode in enumerate(start):
            ends = np.flatnonzero((terminateds[i] | truncateds[i]) & ~fresh[i]).tolist()
            first = 0
            for end in [*ends, None]:
                if end is None and first == n_steps:  # the last episode ended at the last step
                    continuation = self._new_chunk()
                    break
                last = n_steps - 1 if end is None else end
                # a new episode's (or a never reset chunk's) first observation comes from a resetting step
                begin = first + 1 if fresh[i, first] else first
                chunk = self._build(episode, i, first, begin, last, obs, actions, rewards, extras, infos, seq_no,
                                    times, (terminateds[i, last], truncateds[i, last]))
                if end is None:
                    if chunk.t > 0:
                        ongoing.append(chunk)
                    continuation = self._continuation(chunk, lookback)
                else:
                    done.append((end, i, chunk))
                    episode, first = self._new_chunk(), end + 1
            continuations.append(continuation)
        done.sort(key=lambda d: (d[0], d[1]))
        return [d[2] for d in done], ongoing, continuations

    def _new_chunk(self) -> SingleAgentEpisode:
        """An empty episode, as RLlib's runner creates one after a user's episode ends."""
        assert self.env is not None, "only a runner with an env samples"
        return SingleAgentEpisode(observation_space=self.env.single_observation_space,
                                  action_space=self.env.single_action_space)

    def _build(self, episode: SingleAgentEpisode, i: int, first: int, begin: int, last: int, obs: Any, actions: Any,
               rewards: np.ndarray, extras: dict[str, np.ndarray], infos: list[tuple[Any, ...]], seq_no: int,
               times: list[float], flags: tuple[Any, Any]) -> SingleAgentEpisode:
        """User `i`'s chunk: `episode` (a chunk RLlib's runner would be adding to) extended by the observations of
        steps `first`..`last` and the transitions of steps `begin`..`last` (`flags`: the last step's terminated and
        truncated); numpy'd if it holds a step."""
        rows = slice(begin, last + 1)
        head = episode if episode.is_reset else None
        observations = _buffer(head.observations if head is not None else None,
                               _map(lambda a: a[i, first:last + 1], obs))
        info_items = (head.infos.data if head is not None else []) + [x or {} for x in infos[i][first:last + 1]]
        chunk_infos = InfiniteLookbackBuffer(info_items, lookback=head.infos.lookback if head is not None else 0)
        kept = episode.extra_model_outputs
        keys = list(kept) if kept else [*extras, WEIGHTS_SEQ_NO]
        n = last + 1 - begin
        if n == 0:  # a reset observation only: nothing numpy'd (never returned; `cut` keeps it as it is)
            return SingleAgentEpisode(episode.id_, observations=[_item(obs, i, first)], infos=info_items,
                                      observation_space=episode.observation_space,
                                      action_space=episode.action_space, t_started=episode.t_started)
        extra_rows = {k: np.full(n, seq_no) if k == WEIGHTS_SEQ_NO else extras[k][i, rows] for k in keys}
        chunk = SingleAgentEpisode(
            episode.id_, observations=observations, infos=chunk_infos,
            actions=_buffer(head.actions if head is not None else None,
                            _map(lambda a: a[i, rows], actions)),
            rewards=_buffer(head.rewards if head is not None else None, rewards[i, rows], space=_REWARDS_BOX_SPACE),
            extra_model_outputs={k: _buffer(kept.get(k), extra_rows[k]) for k in keys},
            terminated=flags[0], truncated=flags[1],
            observation_space=episode.observation_space, action_space=episode.action_space,
            t_started=episode.t_started)
        chunk._custom_data = episode.custom_data
        # RLlib's episode declares these None at construction; they hold perf_counter times once it has data
        chunk._start_time = episode._start_time if episode._start_time is not None else times[first]  # type: ignore[assignment]
        chunk._last_step_time = times[last]  # type: ignore[assignment]
        chunk._last_added_observation = _item(obs, i, last)
        chunk._last_added_infos = info_items[-1]
        return chunk

    def _continuation(self, chunk: SingleAgentEpisode, lookback: int) -> SingleAgentEpisode:
        """What RLlib's `chunk.cut(lookback)` returns before `chunk` is numpy'd: an empty chunk of the same episode
        whose list-based lookback holds the last `lookback` steps (lookback included, as `cut` reads them)."""
        def tail(buffer: InfiniteLookbackBuffer, count: int) -> list[Any]:
            if count == 0:
                return []
            data: Any = buffer.data
            if not buffer.finalized:
                return list(data[-count:])
            if isinstance(data, np.ndarray):  # rows, or scalars for a 1-D leaf, as `unbatch` gives them
                return list(data[-count:])
            if _flat(data):
                length = len(next(iter(data.values())))
                return [{k: v[j] for k, v in data.items()} for j in range(max(0, length - count), length)]
            return unbatch(tree.map_structure(lambda a: a[-count:], data))

        successor = SingleAgentEpisode(
            chunk.id_, observations=tail(chunk.observations, lookback + 1), infos=tail(chunk.infos, lookback + 1),
            actions=tail(chunk.actions, lookback), rewards=tail(chunk.rewards, lookback),
            extra_model_outputs={k: tail(v, lookback) for k, v in chunk.extra_model_outputs.items()},
            observation_space=chunk.observation_space, action_space=chunk.action_space, t_started=chunk.t,
            len_lookback_buffer="auto")
        successor._custom_data = copy.deepcopy(chunk.custom_data)
        return successor


def _by_user(*steps: Any) -> np.ndarray:
    """One leaf's arrays of consecutive vector steps as one array indexed (user, step, ...)."""
    return np.stack([np.asarray(a) for a in steps], axis=1)


def _item(obs: Any, i: int, step: int) -> Any:
    """User `i`'s observation at `step`, as RLlib's `unbatch` hands it to an episode."""
    return _map(lambda a: a[i, step], obs)



def batched_sampling(config: PPOConfig) -> PPOConfig:
    """`config` (built by `streamline`) sampling with `BatchedEnvRunner`; returns `config`."""
    return config.env_runners(env_runner_cls=BatchedEnvRunner)
