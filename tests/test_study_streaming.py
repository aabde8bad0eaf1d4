"""A study's results stream (issue 32): `trajectories.parquet` is written shard by shard, the report reads one
shard at a time, and `check_fits` bounds what is really held, not the results' size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recoworld.errors import ConfigError
from recoworld.studies.spec import StudySpec

if TYPE_CHECKING:
    from recoworld.studies.runner import StudyResult

SPEC = {
    "name": "streamed",
    "seed": 5,
    "n_users": 10,
    "shard_size": 3,  # 4 shards: 3 + 3 + 3 + 1 users
    "recommenders": ["greedy", "random"],
    "world": {"slate_size": 3, "n_candidates": 12, "horizon_days": 4, "catalog": {"n_items": 300, "seed": 4}},
    "new_item_share": 0.05,
    "creator": {"name": "Tiny Studio", "target_segment": "explorer", "items": {"count": 15, "popularity": 5.0}},
}


@pytest.fixture(scope="module")
def study(ray_session, tmp_path_factory: pytest.TempPathFactory) -> StudyResult:
    from recoworld.studies.runner import run_study

    return run_study(StudySpec.parse(SPEC), tmp_path_factory.mktemp("study"))


@pytest.mark.slow
def test_the_trajectory_file_is_the_shards_parts_concatenated_in_order(study: StudyResult) -> None:
    """Row for row and in order, what `pa.concat_tables` of the parts gave when the table was assembled in
    memory; each shard is its own row group, so a reader can take one at a time."""
    parts = [pq.read_table(p) for p in study.parts]
    assert len(parts) == 4 == study.setup.n_shards
    whole = pq.read_table(study.trajectories_path)
    assert whole.equals(pa.concat_tables(parts))
    assert pq.ParquetFile(study.trajectories_path).num_row_groups == 4
    assert [int(t.column("shard")[0].as_py()) for t in parts] == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(study.trajectories, whole.to_pandas())
    shards = list(study.trajectory_shards(columns=["user_id", "step"]))
    assert [len(s) for s in shards] == [len(t) for t in parts] and list(shards[0].columns) == ["user_id", "step"]
    assert not list(study.out.glob(".trajectories.parquet.*"))  # no temporary file left behind


@pytest.mark.slow
def test_a_resumed_study_writes_the_same_trajectory_file(study: StudyResult, tmp_path: Path) -> None:
    """Stopped after two shards, then resumed: the file is built again from every part, the checkpointed ones
    first, and equals the uninterrupted study's; the stopped run leaves no file and no temporary one."""
    from recoworld.studies.runner import run_study

    def stop(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(StudySpec.parse(SPEC), tmp_path, on_shard=stop)
    assert not (tmp_path / "trajectories.parquet").exists()
    assert not list(tmp_path.glob(".trajectories.parquet.*"))
    resumed = run_study(StudySpec.parse(SPEC), tmp_path)
    assert resumed.shards_run == 2
    assert pq.read_table(resumed.trajectories_path).equals(pq.read_table(study.trajectories_path))


@pytest.mark.slow
def test_a_finished_study_rerun_keeps_its_trajectory_file_unless_it_no_longer_matches(
    study: StudyResult, tmp_path: Path
) -> None:
    """A rerun of a finished study runs no shard and leaves `trajectories.parquet` untouched (not even
    rewritten with the same bytes); a file that is not the parts' concatenation any more is built again."""
    import shutil

    from recoworld.studies.runner import run_study

    out = tmp_path / "copy"
    shutil.copytree(study.out, out)
    path = out / "trajectories.parquet"
    before = path.stat()
    again = run_study(StudySpec.parse(SPEC), out)
    after = path.stat()
    assert again.shards_run == 0
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    pq.write_table(pq.read_table(study.parts[0]), path)  # one shard's rows where four belong
    rebuilt = run_study(StudySpec.parse(SPEC), out)
    assert rebuilt.shards_run == 0
    assert pq.read_table(path).equals(pq.read_table(study.trajectories_path))


@pytest.mark.slow
def test_the_streamed_report_equals_the_one_computed_on_the_whole_frame(study: StudyResult, tmp_path: Path) -> None:
    """Shard by shard, the report's figures are those of `summarize`, `daily_activity` and the exit tables on
    the whole trajectory frame (how the report computed them before results streamed), up to the order of
    the sums: dwell is float32 in the trajectories, summed in float64 here."""
    from recoworld.evaluation.digest import COLUMNS
    from recoworld.evaluation.exits import exit_counts, exit_overview, exit_quotes, exit_shares
    from recoworld.evaluation.metrics import daily_activity, summarize
    from recoworld.studies.report import ALL, KEYS, LABEL, Digest, segment_summary, write_report

    traj, eps = study.trajectories, study.episodes
    digest = Digest.of(study.trajectory_shards(COLUMNS), KEYS, LABEL)
    streamed = segment_summary(digest, eps, target="explorer")
    assert len(streamed) == 2 * 2 * (1 + eps["segment"].nunique())  # recommenders x arms x (all + segments)
    for row in streamed.itertuples(index=False):
        t = traj[(traj["recommender"] == row.recommender) & (traj["arm"] == row.arm)]
        e = eps[(eps["recommender"] == row.recommender) & (eps["arm"] == row.arm)]
        if row.segment != ALL:
            t, e = t[t["segment"] == row.segment], e[e["segment"] == row.segment]
        whole = summarize(t, e).iloc[0].drop("recommender")
        got = pd.Series(row._asdict())[whole.index]
        pd.testing.assert_series_equal(got, whole, check_names=False, check_dtype=False, rtol=1e-6)
    pd.testing.assert_frame_equal(segment_summary(traj, eps, target="explorer"), streamed)

    labelled = traj.assign(recommender=traj["recommender"] + "/" + traj["arm"])
    pd.testing.assert_frame_equal(digest.daily_activity(4), daily_activity(labelled, 4))
    counts = exit_counts(labelled)
    why = pd.concat([exit_overview(labelled)[["exits", "left_for_good"]],
                     exit_shares(counts)[[r for r in counts.columns if counts[r].sum() > 0]]], axis=1).reset_index()
    pd.testing.assert_frame_equal(digest.why_left(), why)
    assert digest.quotes(per_reason=2) == exit_quotes(labelled, per_reason=2)

    # The whole report, from the shards and from the frame, says the same.
    one, two = tmp_path / "shards", tmp_path / "frame"
    kwargs = {"title": "t", "horizon_days": 4, "target": "explorer", "llm_users": True}
    write_report(study.trajectory_shards(COLUMNS), eps, one, **kwargs)  # type: ignore[arg-type]
    write_report(traj, eps, two, **kwargs)  # type: ignore[arg-type]
    assert (one / "report.md").read_text() == (two / "report.md").read_text()
    assert "LLM fallbacks: 0 of" in (one / "report.md").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(one / "summary.csv"), pd.read_csv(two / "summary.csv"))


@pytest.mark.slow
def test_the_html_report_reads_one_shard_at_a_time_and_shows_what_all_rows_at_once_show(
        study: StudyResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`recoworld report` on a study: each shard's row group is read alone, with the digest's columns, and the
    page equals the one of the same rows in one row group, read at once (tests/test_report_streaming.py checks
    that page against the whole frame's figures)."""
    import shutil

    from recoworld.evaluation.html_report import Part, build_report, load_run

    whole = tmp_path / study.out.name  # the folder's name is the page's title
    whole.mkdir()
    for name in ("episodes.parquet", "manifest.json"):
        shutil.copy(study.out / name, whole / name)
    pq.write_table(pq.read_table(study.trajectories_path), whole / "trajectories.parquet")
    assert pq.ParquetFile(whole / "trajectories.parquet").num_row_groups == 1
    read: list[int] = []
    original = Part.read

    def spy(self: Part, columns: list[str]) -> pd.DataFrame:
        read.append(len(frame := original(self, columns)))
        return frame

    monkeypatch.setattr(Part, "read", spy)
    page = build_report(load_run(study.out, max_users=2))
    assert max(read) == max(pq.read_metadata(p).num_rows for p in study.parts) < study.trajectory_rows()
    monkeypatch.undo()
    assert build_report(load_run(whole, max_users=2)) == page


def test_results_far_beyond_memory_are_no_longer_refused() -> None:
    """A million users for 30 days with five recommenders: 1.6 TB of trajectories, on disk shard by shard, so
    only the plan, the episodes and the shards in flight count against memory."""
    from recoworld.studies.runner import check_fits, memory_need

    spec = StudySpec.parse({"n_users": 4, "shard_size": 256, "world": {"horizon_days": 30},
                            "recommenders": ["random", "popular", "greedy", "diverse", "instruct"]})
    fixed, per_user = memory_need(spec, 1_000_000, workers=16)
    assert 1_000_000 * per_user < 16e9 and fixed < 16e9  # far below the results' 1.6 TB
    check_fits(spec, 1_000_000, 64_000_000_000, workers=16)


def test_a_study_whose_held_state_cannot_fit_is_refused_with_an_estimate() -> None:
    from recoworld.studies.runner import MEMORY_SHARE, check_fits, memory_need

    spec = StudySpec.parse({"n_users": 4, "world": {"horizon_days": 1}})
    fixed, per_user = memory_need(spec, 10**9, workers=2)
    with pytest.raises(ConfigError, match=r"n_users 1000000000: the study holds about .* GB .*23.0 GB available"
                                          r".*give n_users \d+ or fewer") as err:
        check_fits(spec, 10**9, 23_000_000_000, workers=2)
    fits = int(str(err.value).split("give n_users ")[1].split()[0])
    assert fits == int((MEMORY_SHARE * 23e9 - fixed) / per_user)
    check_fits(spec, fits, 23_000_000_000, workers=2)  # the estimate it gives is one that passes

    wide = StudySpec.parse({"n_users": 4, "shard_size": 100_000, "world": {"horizon_days": 30},
                            "recommenders": ["random", "popular", "greedy", "diverse", "instruct"]})
    with pytest.raises(ConfigError, match=r"shard_size 100000: 16 shards in flight .*give shard_size \d+ or fewer"):
        check_fits(wide, 10_000_000, 23_000_000_000, workers=16)
    check_fits(wide, 10_000_000, None, workers=16)  # where the memory cannot be told, nothing is refused


def test_parquet_files_concatenate_byte_for_byte_into_one_readable_file(tmp_path: Path) -> None:
    """The parts' pages are copied, not decoded: the file reads as `pa.concat_tables` of the parts, row group
    for row group, whatever their row groups (20 parts: the footer's list takes its long form past 14), their
    nulls, strings and statistics; a part with another schema is refused by name."""
    from recoworld.studies.parquet_concat import ParquetConcat

    parts = []
    for i in range(20):
        n = 7 + 13 * i
        table = pa.table({
            "user_id": [f"u{i}-{j}" for j in range(n)],
            "step": pa.array(range(n), pa.int64()),
            "dwell_min": pa.array([j / 3 if j % 4 else None for j in range(n)], pa.float32()),
            "left": [j % 5 == 0 for j in range(n)],
            "exit_text": [None if j % 3 else "bored of this" for j in range(n)],
        })
        parts.append(tmp_path / f"part-{i}.parquet")
        pq.write_table(table, parts[-1], row_group_size=50 if i % 2 else None)
    out = tmp_path / "all.parquet"
    with out.open("wb") as sink:
        concat = ParquetConcat(sink)
        for part in parts:
            concat.append(part)
        concat.close()
    want = pa.concat_tables([pq.read_table(p) for p in parts])
    assert pq.read_table(out).equals(want)
    file = pq.ParquetFile(out)
    assert file.num_row_groups == sum(pq.ParquetFile(p).num_row_groups for p in parts) > 20
    groups = [pq.ParquetFile(p).read_row_group(g) for p in parts for g in range(pq.ParquetFile(p).num_row_groups)]
    assert all(file.read_row_group(i).equals(g) for i, g in enumerate(groups))

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"user_id": ["x"]}), other)
    with (tmp_path / "bad.parquet").open("wb") as sink, pytest.raises(ValueError, match=r"other\.parquet: its schema"):
        concat = ParquetConcat(sink)
        concat.append(parts[0])
        concat.append(other)
