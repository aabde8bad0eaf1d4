"""DAgger from the oracle into the PPO module (recoworld/rl/teacher.py), with real RLlib modules."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.conftest import require
from tests.test_rllib import TINY_WORLD, tiny_config

torch = require("torch")
require("ray.rllib")

from recoworld.agents import make_recommender  # noqa: E402
from recoworld.catalog import cached_catalog  # noqa: E402
from recoworld.envs.recoworld_env import RecoWorldEnv  # noqa: E402
from recoworld.rl.teacher import DaggerRecorder, TeacherSettings, fit_scorer, slate_imitation_loss  # noqa: E402


def scorer_module(n_candidates: int = 6, slate_size: int = 2):  # -> SlateScorerRLModule
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from recoworld.rl.features import user_relative_space
    from recoworld.rl.rl_module import SlateScorerRLModule

    env = RecoWorldEnv({**TINY_WORLD, "n_candidates": n_candidates, "slate_size": slate_size})
    space, _ = user_relative_space(env.observation_space, env.action_space)
    torch.manual_seed(0)
    return RLModuleSpec(module_class=SlateScorerRLModule, observation_space=space, action_space=env.action_space,
                        model_config={"hidden": [16]}).build()


def test_imitation_loss_excludes_the_teachers_earlier_picks_and_unavailable_candidates() -> None:
    logits = torch.tensor([[[3.0, 1.0, 0.0, -1.0], [5.0, 2.0, 0.0, 9.0]]])  # (B=1, K=2, C=4)
    slates = torch.tensor([[0, 1]])
    masks = torch.tensor([[True, True, True, False]])  # candidate 3 already consumed
    expected = -torch.log_softmax(torch.tensor([3.0, 1.0, 0.0]), 0)[0] - torch.log_softmax(
        torch.tensor([2.0, 0.0]), 0)[0]  # slot 2: candidate 0 is the teacher's slot 1, candidate 3 is masked
    assert torch.allclose(slate_imitation_loss(logits, slates, masks), expected)
    # a pick that is not available (the oracle's filler once the available items are used up) is left out
    filler = torch.tensor([[0, 3]])
    assert torch.allclose(slate_imitation_loss(logits, filler, masks), -torch.log_softmax(logits[0, 0, :3], 0)[0])
    # on logits that already carry the module's FLOAT_MIN mask, the loss stays finite
    from ray.rllib.utils.torch_utils import FLOAT_MIN

    masked = logits + torch.clamp(torch.log(masks.float()), min=FLOAT_MIN)[:, None, :]
    assert torch.isfinite(slate_imitation_loss(masked, filler, masks))


def test_fit_scorer_learns_a_teacher_that_ranks_by_one_feature() -> None:
    """The teacher picks the candidates with the highest engaged-profile similarity (column 8):
    after the fit, the module's own slates are the teacher's."""
    from ray.rllib.core.columns import Columns

    from recoworld.rl.features import N_CANDIDATE_FEATURES, N_GLOBAL_FEATURES

    module = scorer_module()
    c, k, f = 6, 2, N_CANDIDATE_FEATURES
    rng = np.random.default_rng(0)
    features = rng.uniform(-1, 1, (600, c * f + N_GLOBAL_FEATURES)).astype(np.float32)
    masks = rng.random((600, c)) < 0.8
    profile = features[:, : c * f].reshape(600, c, f)[:, :, 8]
    slates = np.argsort(-np.where(masks, profile, -np.inf), axis=1, kind="stable")[:, :k]

    def agreement() -> float:
        obs = {"observations": torch.from_numpy(features),
               "action_mask": torch.from_numpy(masks).float().repeat(1, k)}
        with torch.no_grad():
            logits = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS].numpy()
        return float((logits.reshape(600, k, c)[:, 0].argmax(axis=1) == slates[:, 0]).mean())

    before = agreement()
    loss = fit_scorer(module, features, masks, slates, TeacherSettings(rounds=1, epochs=40, lr=1e-2), seed=0)
    assert np.isfinite(loss)
    assert before < 0.4 and agreement() > 0.9


def test_recorder_records_the_oracles_slate_and_plays_it_only_when_the_teacher_plays() -> None:
    catalog = cached_catalog(RecoWorldEnv(TINY_WORLD).config.catalog)
    module = scorer_module()
    env = RecoWorldEnv({**TINY_WORLD, "expose_mindset": True})
    oracle = make_recommender("oracle", catalog, 2)
    for teacher_plays in (True, False):
        recorder = DaggerRecorder(module, catalog, 2, seed=0, teacher_plays=teacher_plays)
        recorder.begin_episode(0)
        obs, info = env.reset(seed=3)
        assert "mindset" not in info or not info["mindset"]
        played, teacher = [], []
        for _ in range(6):
            slate = recorder.act(obs, info)
            if info.get("mindset"):
                teacher.append(oracle.rank(obs, info["mindset"]))
                played.append(slate)
            obs, _, terminated, truncated, info = env.step(slate)
            recorder.observe(info["reactions"], info)
            if terminated or truncated:
                break
        assert len(recorder.slates) == len(teacher) > 0  # the reset turn has no mindset and is not recorded
        np.testing.assert_array_equal(np.stack(recorder.slates), np.stack(teacher))
        assert np.stack(recorder.features).shape == (len(teacher), module.observation_space["observations"].shape[0])
        if teacher_plays:
            np.testing.assert_array_equal(np.stack(played), np.stack(teacher))


@pytest.mark.slow
@pytest.mark.parametrize("runners", [0, 1])
def test_pretraining_puts_the_distilled_policy_in_the_learner_and_every_env_runner(
        ray_session: ModuleType, tmp_path: Path, runners: int) -> None:
    from ray.rllib.core import DEFAULT_MODULE_ID

    from recoworld.rl.train_config import TrainConfig
    from recoworld.rl.training import pretrain_with_teacher, train
    from recoworld.rl.training_env import build_ppo_config

    cfg = TrainConfig.model_validate({**tiny_config(runners).model_dump(),
                                      "teacher": {"rounds": 2, "users": 4, "epochs": 3}})
    algo = build_ppo_config(cfg).build_algo()
    try:
        before = algo.learner_group.get_weights()[DEFAULT_MODULE_ID]
        rounds = pretrain_with_teacher(cfg, algo, log=lambda msg: None)
        assert rounds["player"].tolist() == ["oracle", "student"]
        assert rounds["turns"].is_monotonic_increasing and np.isfinite(rounds["loss"]).all()
        learner = algo.learner_group.get_weights()[DEFAULT_MODULE_ID]
        changed = [key for key in learner if not np.array_equal(np.asarray(learner[key]), np.asarray(before[key]))]
        assert changed and all(key.startswith("scorer.") for key in changed)  # the value head is PPO's to fit
        runner_states = algo.env_runner_group.foreach_env_runner(
            lambda runner: runner.module.get_state(), local_env_runner=True)
        assert len(runner_states) == 1 + runners
        for state in runner_states:
            for key, value in state.items():
                np.testing.assert_array_equal(np.asarray(value), np.asarray(learner[key]))
    finally:
        algo.stop()

    # in `train`: iteration 0 of the curve is the distilled policy's evaluation, and the run is reproducible
    a = train(cfg, tmp_path / "a", log=lambda msg: None)
    b = train(cfg, tmp_path / "b", log=lambda msg: None)
    assert a.curve["iteration"].tolist() == [0, 1, 2]
    assert a.curve["teacher/turns"].iloc[0] == rounds["turns"].iloc[-1]
    assert np.isfinite(a.curve["retention/ppo"].iloc[0])
    timing = ["seconds"]
    import pandas as pd

    pd.testing.assert_frame_equal(a.curve.drop(columns=timing), b.curve.drop(columns=timing))
    # resuming continues the run without repeating the teacher's rounds
    resumed = train(TrainConfig.model_validate({**cfg.model_dump(), "iterations": 3}), tmp_path / "a", resume=True,
                    log=lambda msg: None)
    assert resumed.curve["iteration"].tolist() == [0, 1, 2, 3]


def test_teacher_needs_the_shared_scorer() -> None:
    from recoworld.errors import ConfigError
    from recoworld.rl.train_config import TrainConfig

    with pytest.raises(ConfigError, match=r"ppo\.network"):
        TrainConfig.load(None, teacher={"rounds": 1}, ppo={"network": "mlp"})
