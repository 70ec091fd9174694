# ruff: noqa: F811  (pytest fixtures imported from server_fixtures are used as arguments)
"""`replayml review`: Markdown review of a run against a baseline, on real runs in a real
local MLflow store (see `server_fixtures.trained_store`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import train
from replayml.cli import app
from replayml.errors import ReplaymlError, RunNotFoundError
from replayml.review import direction, review
from server_fixtures import OTHER_DATASET, TrainedStore, spec_for, trained_store  # noqa: F401

pytestmark = pytest.mark.slow
KEY = ("test_auc", "test_avg_precision", "test_logloss", "test_ndcg_at_10", "test_recall_at_10")


def _cli(store: TrainedStore, *args: str):  # noqa: ANN202
    return CliRunner().invoke(app, [*args, "--tracking-uri", store.uri], catch_exceptions=False)


def _table_row(markdown: str, first_cell: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in:\n{markdown}")


def test_metric_directions() -> None:
    assert [direction(m) for m in KEY] == ["max", "max", "min", "max", "max"]
    assert direction("rows_train") is None


def test_weaker_run_regresses_against_base(trained_store: TrainedStore) -> None:
    s = trained_store
    spec = spec_for(s.uri, s.root)
    r = review(s.weaker, baseline=s.base, spec=spec)
    run, base = r.run, r.baseline
    assert base is not None and r.comparable
    # the near-trivial model is worse on AUC and logloss (checked on the recorded values)
    assert run.metrics["test_auc"] < base.metrics["test_auc"]
    assert run.metrics["test_logloss"] > base.metrics["test_logloss"]
    assert r.regressed("test_auc") and r.regressed("test_logloss")
    assert {"test_auc", "test_logloss"} <= set(r.regressions)

    md = r.markdown
    assert f"[{s.weaker}]({run.url})" in md and f"[{s.base}]({base.url})" in md
    assert run.url.endswith(f"/#/experiments/{run.experiment_id}/runs/{s.weaker}")
    auc = _table_row(md, "test_auc")
    assert auc[1] == f"{run.metrics['test_auc']:.5f}"
    assert auc[2] == f"{base.metrics['test_auc']:.5f}"
    delta = run.metrics["test_auc"] - base.metrics["test_auc"]
    assert float(auc[3]) == pytest.approx(delta, abs=1e-5)
    assert auc[4] == f"{delta / base.metrics['test_auc']:+.2%}"
    # (one small test day: both regressions are within the noise; see the bootstrap test)
    assert auc[5:7] == ["higher", "regressed (within noise)"]
    assert _table_row(md, "test_logloss")[5:7] == ["lower", "regressed (within noise)"]

    # config: only the keys that differ, baseline -> run, dotted paths from the params
    changed = {c.key: (c.baseline, c.run) for c in r.config}
    assert changed["model.num_boost_round"] == ("400", "1")
    assert changed["model.learning_rate"] == ("0.05", "0.01")
    assert changed["dates.train_days"] == ("14", "7")
    assert "model.seed" not in changed and "model.kind" not in changed
    assert all(run.params.get(k) != base.params.get(k) for k in changed)
    assert _table_row(md, "model.num_leaves")[1:] == ["31", "2"]
    assert "tracking.run_name" in {c.key for c in r.other_config}

    # data: both hashes and windows, and "same data: no" because the windows differ
    assert run.tag("data.dvc_hash") == base.tag("data.dvc_hash")
    assert _table_row(md, "DVC hash")[1:] == [base.tag("data.dvc_hash")] * 2
    train_row = _table_row(md, "train window")
    assert train_row[1] == f"{base.tag('dates.train_start')} → {base.tag('dates.train_end')}"
    assert train_row[2] == f"{run.tag('dates.train_start')} → {run.tag('dates.train_end')}"
    assert train_row[1] != train_row[2]
    assert "Same data: **no** (the train date windows differ)" in md
    rows = _table_row(md, "rows train / valid / test")
    assert rows[2] == " / ".join(run.tag(f"rows.{w}") for w in ("train", "valid", "test"))
    # code: both commits, dirty flags and (absent) replay verdicts
    commit = base.tag("code.commit")
    assert _table_row(md, "commit")[1:] == [f"{commit[:12]} (main)"] * 2
    assert _table_row(md, "dirty")[1:] == ["no", "no"]
    assert _table_row(md, "replay verdict")[1:] == ["not replayed", "not replayed"]


def test_better_run_does_not_regress_and_same_data(trained_store: TrainedStore) -> None:
    s = trained_store
    r = review(s.base, baseline=s.weaker, spec=spec_for(s.uri, s.root))
    assert not r.regressed("test_auc") and not r.regressed("test_logloss")
    assert _table_row(r.markdown, "test_auc")[6] == "improved (within noise)"
    same = review(s.not_replayable, baseline=s.base, spec=spec_for(s.uri, s.root))
    assert [c.key for c in same.config] == ["model.deterministic"]
    # booleans and nulls are written as YAML writes them, like the rest of the config
    assert _table_row(same.markdown, "model.deterministic")[1:] == ["true", "false"]
    assert "True" not in same.markdown and "False" not in same.markdown
    assert "Same data: **yes**" in same.markdown
    assert "Different test sets" not in same.markdown
    assert _table_row(same.markdown, "replayable")[2].startswith("no: model.deterministic=false")


@pytest.mark.parametrize(
    ("attr", "words"),
    [
        ("other_data", ["different datasets", "marketplace in the baseline", "marketplace_eu_"]),
    ],
)
def test_not_comparable_is_said_at_the_top(
    trained_store: TrainedStore,
    attr: str,
    words: list[str],
) -> None:
    s = trained_store
    r = review(getattr(s, attr), baseline=s.base, spec=spec_for(s.uri, s.root))
    assert not r.comparable
    first_block = r.markdown.split("\n- Run:")[0]
    assert "**Not comparable:**" in first_block
    for word in words:
        assert word in first_block
    assert "**regressed**" not in r.markdown and "Regressions:" not in r.markdown
    assert r.regressions == []
    with pytest.raises(ReplaymlError, match="not comparable"):
        r.regressed("test_auc")
    # the CLI refuses to judge: exit 2 with the reason, never a silent pass
    result = _cli(s, "review", getattr(s, attr), "--baseline", s.base, "--fail-on", "test_auc")
    assert result.exit_code == 2
    assert "**Not comparable:**" in result.stdout
    assert "cannot judge whether test_auc regressed" in result.stderr


def test_another_model_kind_on_the_same_rows_is_compared_on_the_metrics_both_record(
    trained_store: TrainedStore,
) -> None:
    # a ranker against the classifier it might replace: the question a recommendations team
    # asks, answered on NDCG, recall, AUC and average precision; log loss is the classifier's
    s = trained_store
    r = review(s.ranker, baseline=s.base, spec=spec_for(s.uri, s.root))
    assert r.comparable and "**Not comparable:**" not in r.markdown
    assert "Different model kinds (lgbm in the baseline, lgbm_ranker in the run)" in r.markdown
    assert "; test_logloss, recorded by only one, is not judged" in r.markdown
    ndcg = r.metric("test_ndcg_at_10")
    assert ndcg.run is not None and ndcg.baseline is not None
    assert r.regressed("test_ndcg_at_10") == (ndcg.run < ndcg.baseline)
    with pytest.raises(ReplaymlError, match="test_logloss"):
        r.regressed("test_logloss")


def test_cli_fail_on_exit_codes_and_output_file(
    trained_store: TrainedStore,
    tmp_path: Path,
) -> None:
    s = trained_store
    out = tmp_path / "review.md"
    bad = _cli(
        s, "review", s.weaker, "--baseline", s.base, "--fail-on", "test_auc", "-o", str(out)
    )
    assert bad.exit_code == 1, bad.output
    assert "regressed: test_auc" in bad.stderr
    assert bad.stdout.startswith(f"# Review of run {s.weaker[:8]}")
    assert out.read_text() == bad.stdout
    good = _cli(s, "review", s.base, "--baseline", s.weaker, "--fail-on", "test_auc")
    assert good.exit_code == 0, good.output
    # a tolerance larger than the regression lets it pass
    delta = review(s.weaker, baseline=s.base, spec=spec_for(s.uri, s.root)).metric("test_auc")
    wide = abs(delta.delta or 0) * 2
    tolerant = _cli(
        s, "review", s.weaker, "--baseline", s.base, "--fail-on", "test_auc",
        "--tolerance", str(wide),
    )  # fmt: skip
    assert tolerant.exit_code == 0, tolerant.output
    unknown = _cli(
        s, "review", s.weaker, "--baseline", s.base, "--fail-on", "test_nope", "-o", str(out)
    )
    assert unknown.exit_code == 2 and "test_nope" in unknown.stderr
    assert "test_auc" in unknown.stderr  # names the metrics it knows
    assert unknown.stdout == "" and out.read_text() == bad.stdout  # nothing printed or written
    # bad input is exit 2 (1 means "regressed" to CI), before anything is read or written
    nowhere = tmp_path / "missing" / "review.md"
    lost = _cli(s, "review", s.weaker, "--baseline", s.base, "-o", str(nowhere))
    assert lost.exit_code == 2 and f"the folder {nowhere.parent} does not exist" in lost.stderr
    negative = _cli(s, "review", s.base, "--baseline", s.base, "--tolerance", "-1")
    assert negative.exit_code == 2 and "--tolerance -1.0 is negative" in negative.stderr


def test_summary_without_baseline_and_unknown_runs(trained_store: TrainedStore) -> None:
    s = trained_store
    r = review(s.base, spec=spec_for(s.uri, s.root))
    assert r.baseline is None and not r.regressed("test_auc")
    assert "No baseline" in r.markdown
    assert _table_row(r.markdown, "test_auc")[1] == f"{r.run.metrics['test_auc']:.5f}"
    assert "## Config" not in r.markdown
    with pytest.raises(RunNotFoundError, match="0123456789abcdef"):
        review(s.base, baseline="0123456789abcdef0123456789abcdef", spec=spec_for(s.uri))
    missing = _cli(s, "review", "feedfacefeedfacefeedfacefeedface")
    assert missing.exit_code == 2 and "feedface" in missing.stderr
    assert "baseline" not in missing.stderr
    # an unknown baseline is named as the baseline, with the option that gave it and the fix
    no_base = _cli(s, "review", s.base, "--baseline", "feedfacefeedfacefeedfacefeedface")
    assert no_base.exit_code == 2
    assert "baseline run" in no_base.stderr
    assert "--baseline feedfacefeedfacefeedfacefeedface" in no_base.stderr
    assert "models:/NAME@ALIAS" in no_base.stderr


def test_baseline_from_the_registry(trained_store: TrainedStore) -> None:
    from replayml.registry import promote, register

    s = trained_store
    spec = spec_for(s.uri, s.root)
    name = "review-baseline"
    first = review(s.weaker, spec=spec, name=name)  # no such registered model yet
    assert first.baseline is None
    assert f"No baseline: there is no registered model {name} yet" in first.markdown
    v = register(s.base, name, spec=spec).version
    pending = review(s.weaker, spec=spec, name=name)
    assert pending.baseline is None and f"no version of {name} holds alias @prod" in (
        pending.markdown
    )
    promote(name, v, "prod", spec=spec)
    r = review(s.weaker, spec=spec, name=name)
    assert r.baseline is not None and r.baseline.run_id == s.base
    assert f"`models:/{name}@prod` = {name} version {v}" in r.markdown
    assert r.regressed("test_auc")
    by_uri = _cli(s, "review", s.weaker, "--baseline", f"models:/{name}/{v}", "--fail-on",
                  "test_logloss")  # fmt: skip
    assert by_uri.exit_code == 1 and f"[{s.base}](" in by_uri.stdout


def test_values_too_long_for_params_come_from_the_config_artifact(
    trained_store: TrainedStore,
) -> None:
    s = trained_store
    r = review(s.other_data, baseline=s.base, spec=spec_for(s.uri, s.root))
    assert "data.name" not in r.run.params  # MLflow's param limit: only in the artifact
    assert r.run.tag("params_skipped") == "data.name"
    changed = {c.key: c for c in r.config}
    assert changed["data.name"].baseline == "marketplace"
    assert changed["data.name"].run == OTHER_DATASET  # the full value
    row = _table_row(r.markdown, "data.name")
    assert row[1] == "marketplace" and row[2].endswith(f"… ({len(OTHER_DATASET)} chars)")
    assert len(r.markdown) < 10_000


def test_baseline_scored_on_another_test_set_is_not_the_same_data(project: Path) -> None:
    # no de-duplication keeps the duplicate impressions: same DVC version and windows, but
    # another test set, so the metrics are not measured on the same rows
    base = train(project, ["preprocessing=none", "tracking.run_name=raw"]).run_id
    run = train(project, ["tracking.run_name=dedup"]).run_id
    spec = spec_for(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}", project)
    r = review(run, baseline=base, spec=spec)
    assert r.baseline is not None
    assert r.run.tag("data.dvc_hash") == r.baseline.tag("data.dvc_hash")
    rows, base_rows = int(r.run.tag("rows.test")), int(r.baseline.tag("rows.test"))
    assert rows != base_rows
    md = r.markdown
    why = f"the test sets differ: {base_rows:,} rows in the baseline, {rows:,} in the run"
    assert f"Same data: **no** ({why} (rows.test))" in md
    metrics = md.split("## Metrics")[1].split("## Config")[0]
    assert f"**Different test sets:** {why}" in metrics
    # the deltas are shown, but no metric is called improved or regressed on other rows
    assert _table_row(md, "test_auc")[6] == "n/a (other test rows)"
    assert "Regressions:" not in md and r.regressions == []
    # a CI gate cannot judge a regression on other rows: exit 2, not 1
    with pytest.raises(ReplaymlError, match=r"cannot judge whether test_auc regressed: the test "
                       r"sets differ"):  # fmt: skip
        r.regressed("test_auc")


def test_a_dirty_run_says_what_was_uncommitted_and_links_its_replay_here(
    trained_store: TrainedStore,
) -> None:
    from mlflow.tracking import MlflowClient

    s = trained_store
    client = MlflowClient(s.uri)
    # a replay recorded while the UI ran elsewhere: the link follows this store's UI address
    client.set_tag(s.dirty, "replayml.replay.verdict", "IDENTICAL")
    client.set_tag(s.dirty, "replayml.replay.run_id", "f" * 32)
    client.set_tag(s.dirty, "replayml.replay.url", "http://127.0.0.1:5057/#/old")
    try:
        spec = spec_for(s.uri, s.root)
        md = review(s.dirty, baseline=s.base, spec=spec).markdown
    finally:
        for key in ("verdict", "run_id", "url"):
            client.delete_tag(s.dirty, f"replayml.replay.{key}")
    notice = [line for line in md.splitlines() if "**Uncommitted changes:**" in line]
    assert (
        len(notice) == 1 and "the run was trained from a dirty tree (1 file, +1 −0)" in (notice[0])
    ), md
    dirty = _table_row(md, "dirty")
    assert dirty[1] == "no" and dirty[2].startswith("yes: 1 file, +1 −0 ([replayml/code.diff](")
    assert dirty[2].endswith(f"/runs/{s.dirty}/artifactPath/replayml/code.diff))")
    verdict = _table_row(md, "replay verdict")[2]
    run_url = review(s.dirty, spec=spec).run.url
    assert verdict == f"IDENTICAL ([replay]({run_url.rsplit('/runs/', 1)[0]}/runs/{'f' * 32}))"
    assert "5057" not in md


def test_a_run_reviewed_against_itself_says_so(trained_store: TrainedStore) -> None:
    s = trained_store
    md = review(s.base, baseline=s.base, spec=spec_for(s.uri, s.root)).markdown
    assert "- The baseline is the run itself: every delta is zero by construction" in md
    assert (
        "The baseline is the run itself"
        not in review(s.weaker, baseline=s.base, spec=spec_for(s.uri, s.root)).markdown
    )


def test_links_use_the_ui_address_the_run_was_made_with(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a team sets its public UI address once per run; a review written later on a laptop
    # must not link to the laptop's 127.0.0.1
    run = train(project, ["model=popularity", "tracking.ui_url=https://mlflow.team.io/"]).run_id
    spec = spec_for(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}", project)
    md = review(run, spec=spec).markdown
    assert f"(https://mlflow.team.io/#/experiments/1/runs/{run})" in md
    assert "127.0.0.1" not in md
    # an address given now (REPLAYML_UI_URL) still wins
    monkeypatch.setenv("REPLAYML_UI_URL", "https://mlflow.example.org")
    spec = spec_for(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}", project)
    assert (
        f"(https://mlflow.example.org/#/experiments/1/runs/{run})"
        in review(run, spec=spec).markdown
    )


def test_settings_that_cannot_change_the_model_are_listed_apart(project: Path) -> None:
    # the thread count (same trees by the determinism profile) and LightGBM settings of two
    # popularity baselines (nothing is trained) are not differences a reviewer must weigh
    base = train(project, ["model=popularity", "dates=last_7d"]).run_id
    run = train(
        project,
        ["model=popularity", "dates=last_7d", "model.num_leaves=63", "model.num_threads=1"],
    ).run_id
    spec = spec_for(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}", project)
    r = review(run, baseline=base, spec=spec)
    assert r.config == []
    assert {c.key for c in r.other_config} >= {"model.num_leaves", "model.num_threads"}
    assert "No difference in the data, dates, preprocessing, features or model." in r.markdown


def test_a_ci_gate_without_a_baseline_fails_instead_of_passing(
    trained_store: TrainedStore, tmp_path: Path
) -> None:
    from replayml.registry import register

    s = trained_store
    spec = spec_for(s.uri, s.root)
    name = "review-gate"
    v = register(s.base, name, spec=spec, alias="prod").version
    out = tmp_path / "review.md"
    # a mistyped alias: exit 2 before anything is printed or written, naming what exists
    typo = _cli(s, "review", s.weaker, "--name", name, "--alias", "prdo", "--fail-on",
                "test_auc", "-o", str(out))  # fmt: skip
    assert typo.exit_code == 2, typo.output
    assert f"no version of {name} holds alias @prdo" in typo.stderr
    assert f"the aliases of {name}: @prod -> v{v}" in typo.stderr
    assert "Did you mean --alias prod?" in typo.stderr
    assert typo.stdout == "" and not out.exists()
    # no baseline asked for at all
    bare = _cli(s, "review", s.weaker, "--fail-on", "test_auc", "-o", str(out))
    assert bare.exit_code == 2, bare.output
    assert "--fail-on cannot be judged without a baseline" in bare.stderr
    assert "--baseline RUN_ID" in bare.stderr and "--name NAME" in bare.stderr
    assert bare.stdout == "" and not out.exists()
    # the first model of a name: the gate says how to start; without --fail-on, a summary
    first = "review-gate-first"
    register(s.base, first, spec=spec)
    gate = _cli(s, "review", s.weaker, "--name", first, "--fail-on", "test_auc")
    assert gate.exit_code == 2, gate.output
    assert f"{first} has no aliases yet" in gate.stderr
    assert "review it without --fail-on" in gate.stderr
    assert f"`replayml promote {first} VERSION --alias prod`" in gate.stderr
    summary = _cli(s, "review", s.weaker, "--name", first, "-o", str(out))
    assert summary.exit_code == 0, summary.output
    assert f"No baseline: no version of {first} holds alias @prod yet" in summary.stdout
    assert out.read_text() == summary.stdout
    # the right alias judges
    right = _cli(s, "review", s.weaker, "--name", name, "--fail-on", "test_auc")
    assert right.exit_code == 1 and "regressed: test_auc" in right.stderr


def test_the_reviewed_run_may_be_a_registered_version(trained_store: TrainedStore) -> None:
    from replayml.registry import register

    s = trained_store
    spec = spec_for(s.uri, s.root)
    name = "review-run-uri"
    v = register(s.weaker, name, spec=spec, alias="candidate").version
    by_alias = _cli(s, "review", f"models:/{name}@candidate", "--baseline", s.base,
                    "--fail-on", "test_auc")  # fmt: skip
    assert by_alias.exit_code == 1, by_alias.output  # the weaker run, judged
    run_line = next(ln for ln in by_alias.stdout.splitlines() if ln.startswith("- Run:"))
    assert run_line.startswith(f"- Run: [{s.weaker}](")
    assert f"`models:/{name}@candidate` = {name} version {v}" in run_line
    assert review(f"models:/{name}/{v}", baseline=s.base, spec=spec).run.run_id == s.weaker
    # anything else that is not a run id is named as bad input, not blamed on the store
    for bad in ("reco@prod", s.base[:16], f"runs:/{s.base}/model"):
        result = _cli(s, "review", bad)
        assert result.exit_code == 2, result.output
        assert f"RUN {bad!r} is not a run id" in result.stderr
        assert "models:/NAME@ALIAS or models:/NAME/VERSION" in result.stderr
        assert "server" not in result.stderr and result.stdout == ""
    bad_base = _cli(s, "review", s.base, "--baseline", "prod")
    assert bad_base.exit_code == 2 and "--baseline 'prod' is not a run id" in bad_base.stderr
    unset = _cli(s, "review", f"models:/{name}@prod")
    assert unset.exit_code == 2
    assert f"no version of '{name}' holds alias 'prod'" in unset.stderr
    assert f"the aliases of {name}: @candidate -> v{v}" in unset.stderr


def test_a_registered_baseline_links_its_version_page(trained_store: TrainedStore) -> None:
    from replayml.registry import register

    s = trained_store
    spec = spec_for(s.uri, s.root)
    name = "review page #1"  # quoted in the link as the MLflow UI quotes it
    v = register(s.base, name, spec=spec, alias="prod").version
    r = review(s.weaker, spec=spec, name=name)
    assert r.baseline is not None
    ui = r.baseline.url.split("/#/")[0]
    page = f"{ui}/#/models/review%20page%20%231/versions/{v}"
    line = next(ln for ln in r.markdown.splitlines() if ln.startswith("- Baseline:"))
    assert line.endswith(f"`models:/{name}@prod` = {name} version {v} ([version page]({page}))")
    # a run given by id is a run, not a version: no version link
    plain = review(s.weaker, baseline=s.base, spec=spec).markdown
    assert "version page" not in plain


def test_a_ci_review_of_a_name_never_registered_and_what_the_gate_decided(
    trained_store: TrainedStore, tmp_path: Path
) -> None:
    from replayml.registry import register

    s = trained_store
    name = "review-never-registered"
    out = tmp_path / "review.md"
    # the very first pull request: no model of that name exists yet
    summary = _cli(s, "review", s.weaker, "--name", name, "-o", str(out))
    assert summary.exit_code == 0, summary.output
    assert f"No baseline: there is no registered model {name} yet" in summary.stdout
    assert out.read_text() == summary.stdout
    gate = _cli(s, "review", s.weaker, "--name", name, "--fail-on", "test_auc")
    assert gate.exit_code == 2, gate.output
    assert f"there is no registered model {name!r}" in gate.stderr
    assert "review it without --fail-on" in gate.stderr
    # bad gate options are refused before anything is judged
    for bad in ("nan", "inf"):
        refused = _cli(s, "review", s.weaker, "--baseline", s.base, "--fail-on", "test_auc",
                       "--tolerance", bad)  # fmt: skip
        assert refused.exit_code == 2 and "not a finite number" in refused.stderr
    register(s.base, name, spec=spec_for(s.uri, s.root), alias="prod")
    both = _cli(s, "review", s.weaker, "--baseline", s.base, "--name", name, "--fail-on",
                "test_auc")  # fmt: skip
    assert both.exit_code == 2 and "pass one" in both.stderr
    # the Markdown for the pull request says what the gate decided
    failed = _cli(s, "review", s.weaker, "--name", name, "--fail-on", "test_auc", "-o", str(out))
    assert failed.exit_code == 1
    assert "Gate: --fail-on `test_auc` (tolerance 0): **failed**: test_auc regressed." in (
        out.read_text()
    )
    passed = _cli(s, "review", s.base, "--baseline", s.weaker, "--fail-on", "test_auc")
    assert passed.exit_code == 0 and "**passed**" in passed.stdout
    # an --output that is a link is written through, never replaced by a file
    target = tmp_path / "comment.md"
    target.write_text("")
    link = tmp_path / "latest.md"
    link.symlink_to(target)
    assert _cli(s, "review", s.base, "--baseline", s.weaker, "-o", str(link)).exit_code == 0
    assert link.is_symlink() and "Gate" not in target.read_text() and target.read_text()


def test_the_run_records_every_test_score_and_the_review_bootstraps_them(
    trained_store: TrainedStore,
) -> None:
    import numpy as np

    from replayml.model.evaluate import evaluate, prediction_hash, test_scores_hash
    from replayml.tracking.read import TEST_SCORES_ARTIFACT, RunReader

    s = trained_store
    spec = spec_for(s.uri, s.root)
    reader = RunReader(spec)
    run = reader.run(s.base)
    table = reader.table(s.base, TEST_SCORES_ARTIFACT)
    # the artifact is the scored test window: its rows, its prediction hash, its metrics
    assert len(table) == int(run.tag("rows.test"))
    assert prediction_hash(table["score"].to_numpy()) == run.tag("prediction_hash")
    assert run.tag("test_scores_hash") == test_scores_hash(
        table["group"].to_numpy(), table["label"].to_numpy(), table["score"].to_numpy()
    )
    y, groups, scores = (table[c].to_numpy() for c in ("label", "group", "score"))
    recomputed = evaluate(y, scores, groups, 10, probabilities=True)
    for name, value in recomputed.items():
        assert run.metrics[f"test_{name}"] == pytest.approx(value, abs=1e-12), name
    assert run.metrics["ranked_groups_test"] == len(np.unique(groups[y > 0]))

    r = review(s.weaker, baseline=s.base, spec=spec)
    assert set(r.intervals) == set(KEY)
    # one test day of small data holds a handful of positives: the near-trivial model's
    # lower AUC is within the noise, and the interval holds the observed delta
    auc = r.intervals["test_auc"]
    assert auc.low <= r.metric("test_auc").delta <= auc.high  # type: ignore[operator]
    assert auc.low < 0 < auc.high and r.within_noise("test_auc")
    assert r.regressed("test_auc") and not r.regressed("test_auc", significant=True)
    row = _table_row(r.markdown, "test_auc")
    assert row[6] == "regressed (within noise)"
    assert row[7] == f"[{auc.low:+.5f}, {auc.high:+.5f}]"
    user_days = len(np.unique(groups))
    assert f"the {user_days:,} user-days of the test window resampled 1,000 times" in r.markdown
    # the same run as its own baseline: every interval is exactly zero
    itself = review(s.base, baseline=s.base, spec=spec)
    assert all(i.low == i.high == 0 for i in itself.intervals.values())
    assert _table_row(itself.markdown, "test_auc")[6:] == ["same", "[0, 0]"]
    # runs scored on another dataset get no interval, and a gate on noise cannot judge them
    other = review(s.other_data, baseline=s.base, spec=spec)
    assert other.intervals == {} and "95% interval" not in other.markdown
    with pytest.raises(ReplaymlError, match="not comparable"):
        other.regressed("test_auc", significant=True)


def test_a_gate_beyond_the_noise_passes_a_change_within_it(project: Path) -> None:
    # two weeks of test days: enough positives for a broken model to be worse beyond the noise
    weeks = ["dates.test_days=14"]
    base = train(project, [*weeks, "tracking.run_name=base"]).run_id
    trivial = train(
        project, [*weeks, "tracking.run_name=trivial", "model.num_leaves=2",
                  "model.num_boost_round=1"],
    ).run_id  # fmt: skip
    other = train(project, [*weeks, "tracking.run_name=tweak", "model.num_leaves=30"]).run_id
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    spec = spec_for(uri, project)

    def gate(run: str, baseline: str, *extra: str):  # noqa: ANN202
        args = ["review", run, "--baseline", baseline, "--fail-on", "test_auc", *extra]
        return CliRunner().invoke(app, [*args, "--tracking-uri", uri], catch_exceptions=False)

    broken = review(trivial, baseline=base, spec=spec)
    auc = broken.intervals["test_auc"]
    assert auc.low <= broken.metric("test_auc").delta <= auc.high < 0  # type: ignore[operator]
    assert _table_row(broken.markdown, "test_auc")[6] == "**regressed**"
    failed = gate(trivial, base, "--significant")
    assert failed.exit_code == 1, failed.output
    assert "(tolerance 0, beyond the noise): **failed**: test_auc regressed" in failed.stdout

    # whichever of the two near-equal models scored the lower AUC is the reviewed run
    first = review(other, baseline=base, spec=spec)
    worse, better = (other, base) if first.metric("test_auc").delta < 0 else (base, other)  # type: ignore[operator]
    r = review(worse, baseline=better, spec=spec)
    assert r.metric("test_auc").delta < 0  # type: ignore[operator]
    assert r.within_noise("test_auc"), r.intervals["test_auc"]
    strict = gate(worse, better)
    assert strict.exit_code == 1, strict.output
    assert "| regressed (within noise) |" in strict.stdout
    assert "Regressions: test_auc (within noise)" in strict.stdout
    noisy = gate(worse, better, "--significant")
    assert noisy.exit_code == 0, noisy.output
    assert "(tolerance 0, beyond the noise): **passed**" in noisy.stdout
    off = gate(worse, better, "--significant", "--bootstrap", "0")
    assert off.exit_code == 2 and "the bootstrap was turned off" in off.stderr
    alone = CliRunner().invoke(app, ["review", worse, "--significant", "--tracking-uri", uri])
    assert alone.exit_code == 2 and "add --fail-on METRIC" in alone.stderr

    few = gate(worse, better, "--significant", "--bootstrap", "20")
    assert few.exit_code == 2 and few.stdout == ""
    assert "--bootstrap 20 is too few resamples for a 95% interval" in few.stderr

    # recorded scores that are gone, damaged or edited give no interval, and the review says
    # why: it is still written, and only a gate on the noise cannot judge
    import pandas as pd
    from mlflow.tracking import MlflowClient

    def scores_file(run_id: str) -> Path:
        folder = MlflowClient(uri).get_run(run_id).info.artifact_uri.removeprefix("file://")
        return Path(folder) / "replayml" / "test_scores.parquet"

    scores_file(better).unlink()
    lost = gate(worse, better, "--significant")
    assert lost.exit_code == 2
    assert f"run {better[:8]} records no test scores" in lost.stderr
    assert f"Noise: no intervals: run {better[:8]} records no test scores" in lost.stdout
    table = pd.read_parquet(scores_file(worse))
    table.loc[0, "label"] = 1 - table.loc[0, "label"]  # one outcome flipped
    table.to_parquet(scores_file(worse), index=False)
    edited = gate(worse, better, "--significant")
    assert edited.exit_code == 2
    assert f"run {worse[:8]} do not hash to its test_scores_hash tag" in edited.stdout
    scores_file(worse).write_text("not parquet")
    damaged = gate(worse, better)
    assert damaged.exit_code == 1, damaged.output  # the plain gate still judges the deltas
    assert f"the test scores recorded for run {worse[:8]} (replayml/test_scores.parquet) " \
        "cannot be read: ArrowInvalid" in damaged.stdout  # fmt: skip


def test_the_popularity_baseline_is_judged_on_every_metric_the_classifier_records(
    project: Path,
) -> None:
    # the popularity scores are probabilities too: log loss is judged, nothing is excused
    base = train(project, ["tracking.run_name=base"]).run_id
    popularity = train(project, ["model=popularity", "tracking.run_name=popularity"]).run_id
    spec = spec_for(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}", project)
    r = review(popularity, baseline=base, spec=spec)
    assert "Different model kinds (lgbm in the baseline, popularity in the run)" in r.markdown
    assert "recorded by only one" not in r.markdown
    assert r.regressed("test_logloss") == (r.metric("test_logloss").delta > 0)  # type: ignore[operator]


def test_a_run_recorded_with_the_earlier_tie_rule_is_recomputed_not_regressed(
    project: Path,
) -> None:
    from conftest import mlflow_client

    # the popularity baseline ties often: its NDCG depended on row order before the rule
    old = train(project, ["model=popularity"]).run_id
    new = train(project, ["model=popularity"]).run_id
    client = mlflow_client(project)
    ndcg = client.get_run(old).data.metrics["test_ndcg_at_10"]
    client.delete_tag(old, "replayml.metrics.ties")  # as a run from before the rule
    client.log_metric(old, "test_ndcg_at_10", ndcg + 0.0015)  # what the old rule recorded
    spec = spec_for(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}", project)
    r = review(new, baseline=old, spec=spec, resamples=0)
    row = next(m for m in r.metrics if m.name == "test_ndcg_at_10")
    assert row.baseline == pytest.approx(ndcg) and row.delta == pytest.approx(0.0)
    assert "test_ndcg_at_10" not in r.regressions
    assert "recomputed here from its recorded test scores" in r.markdown
