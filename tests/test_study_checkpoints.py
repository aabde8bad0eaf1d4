"""Study checkpoints are verified before they are trusted (issue 17, point 4).

A recorded shard whose part is emptied, unreadable or not the one the manifest recorded is
run again, and the study ends with exactly the undamaged result; a damaged `manifest.json`
is one clear error, not a `JSONDecodeError`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from recoworld.errors import ConfigError
from recoworld.studies.spec import StudySpec

SPEC = {
    "name": "checkpoints",
    "seed": 3,
    "n_users": 10,
    "shard_size": 4,  # 3 shards: 4 + 4 + 2 users
    "recommenders": ["greedy"],
    "world": {"slate_size": 3, "n_candidates": 12, "horizon_days": 3, "catalog": {"n_items": 200, "seed": 2}},
}
PART = "parts/shard-00001-{}.parquet"
KEYS = ["recommender", "arm", "user_id"]


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory: pytest.TempPathFactory):
    from recoworld.studies.runner import run_study

    out = tmp_path_factory.mktemp("study") / "full"
    return run_study(StudySpec.parse(SPEC), out)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(b"PAR1 this is not parquet PAR1")


def _other_shard(path: Path) -> None:  # a valid Parquet file, but not the part the manifest recorded
    shutil.copy(path.parent / path.name.replace("00001", "00000"), path)


def _deleted(path: Path) -> None:
    path.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["episodes", "trajectories"])
@pytest.mark.parametrize("damage", [_empty, _garbage, _other_shard, _deleted], ids=lambda f: f.__name__[1:])
def test_a_damaged_part_is_redone_not_trusted(
    finished, tmp_path: Path, kind: str, damage: Callable[[Path], None]
) -> None:
    from recoworld.studies.runner import run_study

    out = tmp_path / "study"
    shutil.copytree(finished.out, out)
    damage(out / PART.format(kind))
    again = run_study(StudySpec.parse(SPEC), out)
    assert again.shards_run == 1  # only the damaged shard
    pd.testing.assert_frame_equal(
        again.episodes.sort_values(KEYS, ignore_index=True), finished.episodes.sort_values(KEYS, ignore_index=True)
    )
    assert len(again.trajectories) == len(finished.trajectories)
    assert run_study(StudySpec.parse(SPEC), out).shards_run == 0  # the redone part is trusted again


@pytest.mark.slow
def test_a_manifest_that_disagrees_with_its_part_redoes_the_shard(finished, tmp_path: Path) -> None:
    from recoworld.studies.runner import MANIFEST, run_study

    out = tmp_path / "study"
    shutil.copytree(finished.out, out)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["shards"]["1"]["n_episodes"] += 1
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert run_study(StudySpec.parse(SPEC), out).shards_run == 1


@pytest.mark.slow
def test_a_manifest_from_before_digests_still_resumes(finished, tmp_path: Path) -> None:
    """Checkpoints written before sizes and digests were recorded: readable parts are kept."""
    from recoworld.studies.runner import MANIFEST, run_study

    out = tmp_path / "study"
    shutil.copytree(finished.out, out)
    manifest = json.loads((out / MANIFEST).read_text())
    for entry in manifest["shards"].values():
        entry.pop("sha256")
        entry.pop("bytes")
    (out / MANIFEST).write_text(json.dumps(manifest))
    _empty(out / PART.format("episodes"))
    assert run_study(StudySpec.parse(SPEC), out).shards_run == 1


@pytest.mark.slow
def test_the_manifest_records_a_shards_users_by_digest(finished, tmp_path: Path) -> None:
    """A digest of the shard's user ids, not the ids (some 150 MB for 10M users, rewritten at every checkpoint):
    a digest of other users redoes the shard, and a manifest from before digests, listing the ids, resumes."""
    from recoworld.studies.runner import MANIFEST, run_study, users_digest

    out = tmp_path / "study"
    shutil.copytree(finished.out, out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert all("users" not in e and len(e["users_sha256"]) == 64 for e in manifest["shards"].values())

    listed = json.loads(json.dumps(manifest))
    for entry in listed["shards"].values():
        entry["users"] = sorted(set(pd.read_parquet(out / entry["episodes"])["user_id"]))
        del entry["users_sha256"]
    (out / MANIFEST).write_text(json.dumps(listed))
    assert run_study(StudySpec.parse(SPEC), out).shards_run == 0

    manifest["shards"]["1"]["users_sha256"] = users_digest(["someone else"])
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert run_study(StudySpec.parse(SPEC), out).shards_run == 1


@pytest.mark.parametrize(
    "text",
    ['{"study": "checkpoints", "fingerp', "", "[]", '{"shards": 3}'],
    ids=["truncated", "empty", "a-list", "no-shards"],
)
def test_a_damaged_manifest_is_one_clear_error(tmp_path: Path, text: str) -> None:
    from recoworld.studies.runner import MANIFEST, _load_manifest, prepare

    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(ConfigError, match=r"manifest\.json is damaged .*Delete it to redo every shard"):
        _load_manifest(tmp_path, prepare(StudySpec.parse(SPEC)))
