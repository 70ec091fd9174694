# ruff: noqa: F811  (pytest fixtures imported from server_fixtures are used as arguments)
"""The model registry: versions with lineage, refusals, the models table, compare-and-set alias
moves (with two real processes racing), rollback, and serving `models:/NAME@prod` with
`mlflow models serve` — all on real runs in a real local MLflow store."""

from __future__ import annotations

import csv
import json
import multiprocessing
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from replayml.cli import app
from replayml.errors import ReplaymlError
from replayml.registry import (
    AliasConflictError,
    ModelNotFoundError,
    RegistrationRefused,
    model_rows,
    models_markdown,
    models_rich,
    move_alias,
    promote,
    register,
    resolve_model_uri,
    rollback,
)
from replayml.tracking.registry_store import RegistryStore
from server_fixtures import (  # noqa: F401  (fixtures are used by name)
    TrainedStore,
    _stop,
    model_server,
    post_json,
    race_worker,
    ready,
    render_page,
    spec_for,
    start_server,
    trained_store,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("run_elsewhere")]


def _cli(store: TrainedStore, *args: str):  # noqa: ANN202
    return CliRunner().invoke(app, [*args, "--tracking-uri", store.uri], catch_exceptions=False)


def _client(store: TrainedStore) -> MlflowClient:
    return MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)


def test_register_records_lineage_both_ways(trained_store: TrainedStore) -> None:
    s = trained_store
    before = time.time()
    result = _cli(
        s, "register", s.base, "--name", "reco-lineage", "--alias", "ab",
        "--ab-label", "treatment", "--ab-group", "2026-11-homepage",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "registered reco-lineage version 1" in result.stdout
    assert "reco-lineage@ab: version none -> 1" in result.stdout
    client = _client(s)
    run = client.get_run(s.base)
    tags = run.data.tags
    mv = client.get_model_version("reco-lineage", "1")
    # lineage in MLflow's own fields: the version points at the run and the logged model
    assert mv.run_id == s.base
    assert mv.source == tags["replayml.model_uri"]
    model_id = tags["replayml.model_uri"].removeprefix("models:/")
    linked = json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"])
    assert {"name": "reco-lineage", "version": "1"} in linked
    assert str(client.get_model_version_by_alias("reco-lineage", "ab").version) == "1"
    # lineage in our tags, equal to what the run recorded
    t = mv.tags
    for key in ("data.dvc_hash", "config_hash", "code.commit", "code.dirty", "dataset"):
        assert t[f"replayml.{key}"] == tags[f"replayml.{key}"], key
    assert t["replayml.run_id"] == s.base
    assert t["replayml.run_url"].endswith(f"/runs/{s.base}")
    assert t["replayml.replay.verdict"] == "not replayed"
    for metric in ("test_auc", "test_logloss", "test_ndcg_at_10", "test_recall_at_10"):
        assert float(t[f"replayml.metric.{metric}"]) == run.data.metrics[metric]
    assert t["replayml.ab_label"] == "treatment"
    assert t["replayml.ab_group"] == "2026-11-homepage"
    assert t["replayml.registered_by"] == "alice"
    at = datetime.strptime(t["replayml.registered_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before - 2 <= at.timestamp() <= time.time() + 1
    assert "replayml.forced" not in t
    assert t["replayml.alias.ab.previous"] == "none"
    audit = [v for k, v in t.items() if k.startswith("replayml.alias.ab.audit.")]
    assert audit == [
        f"register reco-lineage@ab: none -> 1 by alice at {audit[0].split(' at ')[1]}"
    ]


def test_replay_verdict_travels_with_the_version(trained_store: TrainedStore) -> None:
    s = trained_store
    client = _client(s)
    # what `replayml replay` writes on the original run (replay.py's tags)
    client.set_tag(s.ranker, "replayml.replay.verdict", "IDENTICAL")
    client.set_tag(s.ranker, "replayml.replay.run_id", "0" * 32)
    version = register(s.ranker, "reco-verdict", spec=spec_for(s.uri)).version
    tags = client.get_model_version("reco-verdict", version).tags
    assert tags["replayml.replay.verdict"] == "IDENTICAL"
    assert tags["replayml.replay.run_id"] == "0" * 32
    assert tags["replayml.model.kind"] == "lgbm_ranker"
    # a later replay shows in the models table; a DIFFERENT one keeps the run out of the registry
    try:
        client.set_tag(s.ranker, "replayml.replay.verdict", "DIFFERENT")
        (row,) = model_rows("reco-verdict", spec=spec_for(s.uri))
        assert row.replay_verdict == "DIFFERENT"
        assert row.run_url.endswith(f"/runs/{s.ranker}")
        with pytest.raises(RegistrationRefused, match="replay came out DIFFERENT"):
            register(s.ranker, "reco-verdict", spec=spec_for(s.uri))
    finally:
        client.set_tag(s.ranker, "replayml.replay.verdict", "IDENTICAL")


@pytest.mark.parametrize(
    ("attr", "why"),
    [
        ("failed", "is FAILED, not FINISHED"),
        ("not_replayable", "is not replayable (replayml.replayable=false: model.deterministic"),
        ("dirty_no_diff", "dirty git tree and its diff (replayml/code.diff) is not recorded"),
    ],
)
def test_untrustworthy_runs_are_refused_unless_forced(
    trained_store: TrainedStore,
    attr: str,
    why: str,
) -> None:
    s = trained_store
    name = f"reco-refused-{attr.replace('_', '-')}"
    run_id = getattr(s, attr)
    refused = _cli(s, "register", run_id, "--name", name)
    assert refused.exit_code == 2
    assert why in refused.stderr and "--force" in refused.stderr
    client = _client(s)
    assert client.search_registered_models(f"name = '{name}'") == []  # nothing written
    with pytest.raises(RegistrationRefused, match="refusing to register"):
        register(run_id, name, spec=spec_for(s.uri))

    forced = _cli(s, "register", run_id, "--name", name, "--force")
    if attr == "failed":  # it failed inside LightGBM, before any model was logged
        assert forced.exit_code == 2 and "has no logged model" in forced.stderr
        assert client.search_registered_models(f"name = '{name}'") == []
        return
    assert forced.exit_code == 0, forced.output
    assert why in forced.stderr
    tags = client.get_model_version(name, "1").tags
    assert tags["replayml.forced"] == "true"
    assert why in tags["replayml.forced_reason"]
    rows = model_rows(name, spec=spec_for(s.uri))
    assert rows[0].forced and "1 (forced)" in models_markdown(name, rows)


def test_a_replay_run_is_refused_naming_the_run_it_replayed(trained_store: TrainedStore) -> None:
    s = trained_store
    name = "reco-replay-run"
    client = _client(s)
    replayed = _cli(s, "replay", s.weaker, "--project", str(s.root))
    assert replayed.exit_code in (0, 1), replayed.output  # IDENTICAL or DIFFERENT: a replay run
    replay_id = client.get_run(s.weaker).data.tags["replayml.replay.run_id"]
    try:
        assert client.get_run(replay_id).data.tags["replayml.replay_of"] == s.weaker
        for force in ([], ["--force"]):
            refused = _cli(s, "register", replay_id, "--name", name, *force)
            assert refused.exit_code == 2, refused.output
            assert (
                f"run {replay_id} is a replay of run {s.weaker}: register {s.weaker} "
                f"(`replayml register {s.weaker} --name {name}`); its replay verdict is "
                f"recorded on it"
            ) in refused.stderr
            assert client.search_registered_models(f"name = '{name}'") == []  # nothing made
    finally:  # the shared store's runs stay as the other tests expect them
        client.delete_run(replay_id)
        for key in ("verdict", "run_id", "url", "environment"):
            client.delete_tag(s.weaker, f"replayml.replay.{key}")


def test_dirty_run_with_its_diff_registers(trained_store: TrainedStore) -> None:
    s = trained_store
    done = register(s.dirty, "reco-dirty", spec=spec_for(s.uri))
    assert done.forced_reasons == ()
    assert done.tags["replayml.code.dirty"] == "true"


def test_run_without_a_model_and_unknown_run(trained_store: TrainedStore) -> None:
    s = trained_store
    with pytest.raises(ReplaymlError, match="does not exist"):
        register("0" * 32, "reco-none", spec=spec_for(s.uri))
    client = _client(s)
    assert client.search_registered_models("name = 'reco-none'") == []


def test_models_table_markdown_and_rich(trained_store: TrainedStore) -> None:
    from rich.console import Console

    s = trained_store
    spec = spec_for(s.uri)
    name = "reco-table"
    v1 = register(s.base, name, spec=spec, alias="prod", ab_label="control", ab_group="g1")
    v2 = register(s.weaker, name, spec=spec, alias="ab", ab_label="treatment", ab_group="g1")
    result = _cli(s, "models", name)  # CliRunner's stdout is not a tty: Markdown
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| version | registered at | aliases | A/B label | A/B group |")
    row2 = [c.strip() for c in lines[1].strip("|").split("|")]
    row1 = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row2[0] == v2.version and row2[2:5] == ["ab", "treatment", "g1"]
    assert row1[0] == v1.version and row1[2:5] == ["prod", "control", "g1"]
    assert row1[5] == v1.run_url and row1[5].endswith(s.base)
    auc = _client(s).get_run(s.base).data.metrics["test_auc"]
    assert f"auc={auc:.4f}" in row1[6] and row1[7] == "not replayed"
    # where the model came from, in the table: data version, commit, and its windows (its
    # metrics are on that test window)
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    lineage = row1[head.index("lineage")]
    tags = _client(s).get_run(s.base).data.tags
    assert f"data marketplace {tags['replayml.data.dvc_hash'][:12]}" in lineage
    assert f"code {tags['replayml.code.commit'][:12]}" in lineage
    for w in ("train", "valid", "test"):
        window = f"{tags[f'replayml.dates.{w}_start']}..{tags[f'replayml.dates.{w}_end']}"
        assert f"{w} {window}" in lineage, lineage
    console = Console(record=True, width=250, color_system=None)
    console.print(models_rich(name, model_rows(name, spec=spec)))
    text = console.export_text()
    assert "treatment" in text and "control" in text and "prod" in text
    missing = _cli(s, "models", "no-such-model")
    assert missing.exit_code == 2 and "no registered model 'no-such-model'" in missing.stderr
    # without a name: every registered model, its latest version and who holds which alias
    listed = _cli(s, "models")
    assert listed.exit_code == 0, listed.output
    row = next(ln for ln in listed.stdout.splitlines() if ln.startswith(f"| {name} |"))
    page = f"{v1.run_url.split('/#/')[0]}/#/models/{name}/versions/{v2.version}"
    assert row == (
        f"| {name} | {v2.version} | ab → v{v2.version}, prod → v{v1.version} | {page} |"
    )


def test_promote_rollback_and_audit(trained_store: TrainedStore) -> None:
    s = trained_store
    spec = spec_for(s.uri)
    name = "reco-promote"
    versions = [register(r, name, spec=spec).version for r in (s.base, s.weaker, s.dirty)]
    client = _client(s)

    def holder() -> str | None:
        holder = client.get_registered_model(name).aliases.get("prod")
        return None if holder is None else str(holder)

    ok = _cli(s, "promote", name, versions[0], "--alias", "prod", "--expect-version", "none")
    assert ok.exit_code == 0, ok.output
    assert promote(name, versions[1], "prod", spec=spec, expect=versions[0]).changed
    move = promote(name, versions[2], "prod", spec=spec)
    assert (move.from_version, move.to_version, move.by) == (versions[1], versions[2], "alice")
    assert holder() == versions[2]
    t3 = client.get_model_version(name, versions[2]).tags
    assert t3["replayml.alias.prod.previous"] == versions[1]
    audit3 = [v for k, v in t3.items() if k.startswith("replayml.alias.prod.audit.")]
    assert len(audit3) == 1 and audit3[0].startswith(
        f"promote {name}@prod: {versions[1]} -> {versions[2]} by alice at "
    )
    t2 = client.get_model_version(name, versions[1]).tags
    assert sum(k.startswith("replayml.alias.prod.audit.") for k in t2) == 2  # in, then out
    last = json.loads(client.get_registered_model(name).tags["replayml.alias.prod.last_move"])
    assert (last["from"], last["to"], last["by"]) == (versions[1], versions[2], "alice")

    # a stale expectation changes nothing and says who holds the alias
    stale = _cli(s, "promote", name, versions[0], "--alias", "prod", "--expect-version", "1")
    assert stale.exit_code == 2
    assert f"held by version {versions[2]}, not the expected version 1" in stale.stderr
    assert holder() == versions[2]

    back = _cli(s, "rollback", name, "--alias", "prod")
    assert back.exit_code == 0, back.output
    assert f"{name}@prod: version {versions[2]} -> {versions[1]} (rollback" in back.stdout
    assert holder() == versions[1]
    assert rollback(name, "prod", spec=spec).to_version == versions[0]
    assert holder() == versions[0]
    with pytest.raises(AliasConflictError, match="no recorded previous holder"):
        rollback(name, "prod", spec=spec)
    with pytest.raises(ModelNotFoundError, match="version 9"):
        promote(name, "9", "prod", spec=spec)
    assert holder() == versions[0]


def test_a_deleted_alias_holder_is_named_and_rollback_restores_the_one_before(
    trained_store: TrainedStore,
) -> None:
    """Deleting the version that holds @prod takes the alias with it (MLflow's doing); the
    last audited move still says which version held it, from which run, and what was before."""
    s = trained_store
    spec = spec_for(s.uri)
    name = "reco-deleted-holder"
    for run_id in (s.base, s.weaker):
        register(run_id, name, spec=spec)
    promote(name, "1", "prod", spec=spec)
    promote(name, "2", "prod", spec=spec, expect="1")
    client = _client(s)
    client.delete_model_version(name, "2")
    assert "prod" not in client.get_registered_model(name).aliases
    said = f"{name}@prod was version 2, which was deleted (last audited move 1 -> 2: promote by "
    from_run = f"version 2 came from run {s.weaker}"

    gate = _cli(s, "review", s.base, "--name", name, "--fail-on", "test_auc")
    assert gate.exit_code == 2, gate.output
    assert said in gate.stderr and from_run in gate.stderr
    assert f"`replayml rollback {name} --alias prod` (back to version 1)" in gate.stderr
    assert f"--baseline {s.weaker}" in gate.stderr  # the deleted version's run still compares
    assert " yet" not in gate.stderr and "first model" not in gate.stderr
    summary = _cli(s, "review", s.base, "--name", name, "--bootstrap", "0")
    assert summary.exit_code == 0, summary.output
    assert f"No baseline: {said}" in summary.stdout and " yet" not in summary.stdout
    with pytest.raises(ModelNotFoundError, match="was version 2, which was deleted"):
        resolve_model_uri(f"models:/{name}@prod", spec=spec)

    stale = _cli(s, "promote", name, "1", "--alias", "prod", "--expect-version", "2")
    assert stale.exit_code == 2, stale.output
    assert said in stale.stderr and "someone moved it" not in stale.stderr
    assert "--expect-version none" in stale.stderr
    assert "prod" not in client.get_registered_model(name).aliases  # nothing changed

    back = _cli(s, "rollback", name, "--alias", "prod")
    assert back.exit_code == 0, back.output
    assert f"{name}@prod: version none -> 1 (rollback by alice" in back.stdout
    assert said in back.stderr  # a warning: what the rollback restored after
    assert str(client.get_registered_model(name).aliases["prod"]) == "1"
    audit = [v for k, v in client.get_model_version(name, "1").tags.items()
             if k.startswith("replayml.alias.prod.audit.")]  # fmt: skip
    assert any(a.startswith(f"rollback {name}@prod: none -> 1 by alice at ") for a in audit)
    assert any(a.endswith(f"(version 2: run {s.weaker})") for a in audit)  # the move out
    # the first holder deleted: nothing before it to restore, and that is said
    client.delete_model_version(name, "1")
    first = _cli(s, "rollback", name, "--alias", "prod")
    assert first.exit_code == 2, first.output
    assert f"{name}@prod was version 1, which was deleted" in first.stderr
    assert "that move found @prod unset, so no earlier holder is recorded" in first.stderr


def test_move_outside_replayml_is_detected(trained_store: TrainedStore) -> None:
    """A holder change between our read and our claim check stops the move; an alias set
    outside replayml shows up as an audit-trail warning."""
    s = trained_store
    spec = spec_for(s.uri)
    name = "reco-interleave"
    v = [register(r, name, spec=spec).version for r in (s.base, s.weaker, s.dirty)]
    promote(name, v[0], "prod", spec=spec)
    client = _client(s)
    store = RegistryStore(spec)
    errors: list[BaseException] = []

    def slow_mover() -> None:
        try:
            move_alias(store, name, "prod", v[1], expect=v[0], settle=2.0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=slow_mover)
    thread.start()
    deadline = time.time() + 20

    def claimed() -> bool:  # (the first promote left its own claim: wait for the mover's)
        tag = client.get_registered_model(name).tags.get("replayml.alias.prod.claim", "{}")
        return json.loads(tag).get("to") == v[1]

    while not claimed():
        assert time.time() < deadline, "the mover never claimed"
        time.sleep(0.05)
    client.set_registered_model_alias(name, "prod", v[2])  # someone else, outside replayml
    thread.join(timeout=30)
    assert len(errors) == 1 and isinstance(errors[0], AliasConflictError)
    assert f"moved from version {v[0]} to {v[2]} while this move" in str(errors[0])
    assert (
        str(client.get_registered_model(name).aliases["prod"]) == v[2]
    )  # left as the other set it
    move = promote(name, v[1], "prod", spec=spec)
    assert any("outside replayml" in w for w in move.warnings)


def test_a_later_claim_makes_the_earlier_mover_stand_down(trained_store: TrainedStore) -> None:
    """Both movers read the same holder; the later claim wins, and the earlier mover stops
    before touching the alias (no flapping, no audit record of a move that did not stick)."""
    s = trained_store
    spec = spec_for(s.uri)
    name = "reco-claims"
    v = [register(r, name, spec=spec).version for r in (s.base, s.weaker, s.dirty)]
    promote(name, v[0], "prod", spec=spec)
    client = _client(s)
    outcome: dict[str, object] = {}

    def mover(label: str, target: str, settle: float) -> None:
        try:
            outcome[label] = move_alias(
                RegistryStore(spec), name, "prod", target, expect=v[0], settle=settle
            )
        except AliasConflictError as exc:
            outcome[label] = exc

    def claim() -> dict:
        return json.loads(client.get_registered_model(name).tags["replayml.alias.prod.claim"])

    first = threading.Thread(target=mover, args=("first", v[1], 1.5))
    first.start()
    deadline = time.time() + 20
    while claim()["to"] != v[1]:
        assert time.time() < deadline, "the first mover never claimed"
        time.sleep(0.05)
    second = threading.Thread(target=mover, args=("second", v[2], 3.0))
    second.start()
    first.join(timeout=30)
    second.join(timeout=30)
    assert isinstance(outcome["first"], AliasConflictError), outcome
    assert "abandoned before touching the alias" in str(outcome["first"])
    assert f"moving it to version {v[2]}" in str(outcome["first"])
    assert not isinstance(outcome["second"], BaseException), outcome
    assert str(client.get_registered_model(name).aliases["prod"]) == v[2]
    tags1 = client.get_model_version(name, v[1]).tags
    assert not any(k.startswith("replayml.alias.prod.") for k in tags1)  # never touched


def test_two_processes_race_for_the_same_alias(trained_store: TrainedStore) -> None:
    """Two processes move prod from the same expected holder at the same moment, three times
    over: every time exactly one wins, the loser says so, and the store agrees with the
    winner (holder, previous tag, audit record). Usually the loser stops before touching the
    alias; if one mover stalls longer than the claim wait, the overwrite is detected after
    the fact and audited instead (MLflow has no atomic alias update)."""
    s = trained_store
    spec = spec_for(s.uri)
    name = "reco-race"
    v = [register(r, name, spec=spec).version for r in (s.base, s.weaker, s.dirty, s.other_data)]
    promote(name, v[0], "prod", spec=spec)
    client = _client(s)
    holder, rounds = v[0], 3
    # fresh interpreters (no state shared with this one); the fork server imports mlflow once
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["server_fixtures", "replayml.registry", "mlflow.tracking"])
    barrier = ctx.Barrier(3)  # the two racers and this test
    out = ctx.Queue()
    procs = [
        ctx.Process(target=race_worker, args=(s.uri, name, "prod", k, rounds, barrier, out))
        for k in (0, 1)
    ]
    for p in procs:
        p.start()
    try:
        for i in range(rounds):
            targets = [x for x in v if x != holder][:2]  # each racer wants another version
            plan = {"expected": holder, "targets": targets}
            client.set_registered_model_tag(name, "test.plan", json.dumps(plan))
            before = {t: set(client.get_model_version(name, t).tags) for t in targets}
            barrier.wait(timeout=120)  # go
            barrier.wait(timeout=120)  # both done
            results = [out.get(timeout=30) for _ in range(2)]
            assert sorted(r[0] for r in results) == ["conflict", "ok"], f"round {i}: {results}"
            (_, winner, token), (_, _, message) = sorted(results, key=lambda r: r[0] != "ok")
            assert "concurrent move" in message or "while this move" in message, message
            loser = next(r[1] for r in results if r[0] == "conflict")
            added = set(client.get_model_version(name, loser).tags) - before[loser]
            if "overwritten" in message:  # detected after the fact: the loser's set is audited
                assert any(".audit." in k for k in added), f"round {i}: {added}"
            else:  # the usual outcome: the loser stopped before touching anything
                assert "nothing was changed" in message or "abandoned before touching" in message
                assert not added, f"round {i}: the loser touched version {loser}: {added}"
            model = client.get_registered_model(name)
            assert str(model.aliases["prod"]) == winner, f"round {i}: {results}"
            last = json.loads(model.tags["replayml.alias.prod.last_move"])
            if "overwritten" not in message:  # (two moves wrote it, in either order)
                assert (last["token"], last["from"], last["to"]) == (token, holder, winner)
            tags = client.get_model_version(name, winner).tags
            assert tags["replayml.alias.prod.previous"] == holder
            holder = winner
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    assert all(p.exitcode == 0 for p in procs)


def test_served_prod_model_answers_like_the_run(
    trained_store: TrainedStore,
    tmp_path: Path,
) -> None:
    """`mlflow models serve -m models:/NAME@prod` scores the run's input example exactly as the
    pipeline scored those rows (its `scored_sample.csv`)."""
    s = trained_store
    spec = spec_for(s.uri)
    name = "reco-served"
    register(s.weaker, name, spec=spec)
    v = register(s.base, name, spec=spec, alias="prod").version
    client = _client(s)
    model_uri = client.get_run(s.base).data.tags["replayml.model_uri"]
    model_dir = Path(client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
                     .removeprefix("file://"))  # fmt: skip
    example = json.loads((model_dir / "serving_input_example.json").read_text())
    n = len(example["dataframe_split"]["data"])
    run_dir = Path(client.get_run(s.base).info.artifact_uri.removeprefix("file://"))
    with (run_dir / "replayml" / "scored_sample.csv").open() as f:
        expected = [float(row["score"]) for row in list(csv.DictReader(f))[:n]]
    assert n >= 2 and len(set(expected)) >= 2, "the example should not be trivially constant"
    assert str(client.get_registered_model(name).aliases["prod"]) == v
    with model_server(f"models:/{name}@prod", s.uri, tmp_path) as url:
        answer = post_json(url + "/invocations", example)
    assert answer["predictions"] == pytest.approx(expected, rel=0, abs=1e-12)


@pytest.mark.parametrize("alias", ["bad alias", "latest", "v3"])
def test_a_bad_alias_is_refused_before_any_version_is_created(
    trained_store: TrainedStore, alias: str
) -> None:
    s = trained_store
    name = f"reco-bad-alias-{alias.replace(' ', '-')}"  # the store is shared by the cases
    result = _cli(s, "register", s.base, "--name", name, "--alias", alias)
    assert result.exit_code == 2
    assert f"--alias {alias!r} is not a valid alias" in result.output
    assert "server" not in result.output  # bad input, not a store problem
    client = _client(s)
    assert client.search_model_versions(f"name = '{name}'") == []
    register(s.base, name, spec=spec_for(s.uri))
    for command in (["promote", name, "1"], ["rollback", name]):
        moved = _cli(s, *command, "--alias", alias)
        assert moved.exit_code == 2 and "is not a valid alias" in moved.output
    assert client.get_registered_model(name).aliases == {}


def test_a_new_alias_that_looks_like_a_slip_of_an_existing_one_is_refused(
    trained_store: TrainedStore,
) -> None:
    s = trained_store
    name = "reco-near-alias"
    register(s.base, name, spec=spec_for(s.uri), alias="prod")
    client = _client(s)
    for slip in ("Prod", "prdo"):
        refused = _cli(s, "promote", name, "1", "--alias", slip)
        assert refused.exit_code == 2, refused.output
        assert (
            f"--alias {slip!r} would be a new alias of {name}, close to its existing alias "
            f"'prod' (held by version 1): nothing was changed. Use --alias prod, or pass "
            f"--new-alias"
        ) in refused.stderr
        register_too = _cli(s, "register", s.weaker, "--name", name, "--alias", slip)
        assert register_too.exit_code == 2 and "close to its existing alias" in register_too.stderr
        rolled = _cli(s, "rollback", name, "--alias", slip)
        assert rolled.exit_code == 2 and "Did you mean --alias prod?" in rolled.stderr
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert client.get_registered_model(name).aliases == {"prod": 1}
    # meant: said so; and a new alias like no other is fine as it was
    meant = _cli(s, "promote", name, "1", "--alias", "prod2", "--new-alias")
    assert meant.exit_code == 0, meant.output
    assert _cli(s, "promote", name, "1", "--alias", "shadow").exit_code == 0
    # a numbered series (ab-1, ab-2) or another region (prod-eu, prod-us) is no slip
    for series in ("ab-1", "ab-2", "prod-eu", "prod-us"):
        assert _cli(s, "promote", name, "1", "--alias", series).exit_code == 0, series
    assert set(client.get_registered_model(name).aliases) == {
        "prod", "prod2", "shadow", "ab-1", "ab-2", "prod-eu", "prod-us"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "said", "fix"),
    [
        ("reco@x", "contains '@': models:/reco@x/1 would read as alias 'x/1' of model 'reco'",
         "reco-x"),
        ("reco/x", "contains '/'", "reco-x"),
        (" reco", "has leading or trailing whitespace: it would be another model than 'reco'",
         "reco"),
        ("reco\t", "has leading or trailing whitespace", "reco"),
    ],
)  # fmt: skip
def test_a_model_name_registry_uris_would_misread_is_refused_before_anything_is_created(
    trained_store: TrainedStore, bad: str, said: str, fix: str
) -> None:
    s = trained_store
    before = {m.name for m in _client(s).search_registered_models()}
    result = _cli(s, "register", s.base, "--name", bad, "--alias", "prod")
    assert result.exit_code == 2, result.output
    assert f"--name {bad!r} {said}" in result.stderr
    assert f"e.g. --name {fix}; nothing was created" in result.stderr
    assert {m.name for m in _client(s).search_registered_models()} == before


def test_a_malformed_expected_version_is_refused_as_such(trained_store: TrainedStore) -> None:
    s = trained_store
    name = "reco-expect"
    register(s.base, name, spec=spec_for(s.uri), alias="prod")
    register(s.weaker, name, spec=spec_for(s.uri))
    for bad in ("v1", " 1", "0", "1.0", "None"):
        for command in (["promote", name, "2"], ["rollback", name]):
            result = _cli(s, *command, "--alias", "prod", "--expect-version", bad)
            assert result.exit_code == 2, result.output
            assert f"--expect-version {bad!r} is not a version" in result.stderr
            assert "or none when the alias is unset" in result.stderr
            assert "someone moved it" not in result.stderr
    assert _client(s).get_registered_model(name).aliases == {"prod": 1}
    ok = _cli(s, "promote", name, "2", "--alias", "prod", "--expect-version", "1")
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--ab-group", "exp-9"], "--ab-group 'exp-9' without --ab-label"),
        (["--ab-label", "treatment"], "--ab-label 'treatment' without --ab-group"),
        (["--ab-label", " ", "--ab-group", "exp-9"], "--ab-label ' ' is blank"),
    ],
)
def test_half_an_ab_tag_is_refused_before_any_version_is_created(
    trained_store: TrainedStore, options: list[str], named: str
) -> None:
    s = trained_store
    name = f"reco-half-ab-{len(options)}-{options[0]}"
    result = _cli(s, "register", s.base, "--name", name, "--alias", "ab", *options)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert _client(s).search_model_versions(f"name = '{name}'") == []


def test_a_register_that_loses_the_alias_race_names_the_version_it_made(
    trained_store: TrainedStore,
) -> None:
    s = trained_store
    spec = spec_for(s.uri)
    name = "reco-register-race"
    register(s.base, name, spec=spec)
    client = _client(s)
    key = "replayml.alias.canary.claim"

    def rival() -> None:  # another mover claims the alias right after the register's claim
        deadline = time.time() + 30
        while time.time() < deadline:
            raw = client.get_registered_model(name).tags.get(key)
            if raw and json.loads(raw)["to"] == "2":
                rival_claim = {"token": "rival", "action": "promote", "to": "1", "by": "bob",
                               "at": "now", "from": "none"}  # fmt: skip
                client.set_registered_model_tag(name, key, json.dumps(rival_claim))
                return
            time.sleep(0.005)

    thread = threading.Thread(target=rival)
    thread.start()
    with pytest.raises(AliasConflictError, match=(
        f"Version 2 of {name} was registered without the alias; move it later with "
        f"`replayml promote {name} 2 --alias canary`"
    )):  # fmt: skip
        register(s.weaker, name, spec=spec, alias="canary")
    thread.join(timeout=30)
    assert "canary" not in client.get_registered_model(name).aliases


def test_promoting_a_forced_version_warns(trained_store: TrainedStore) -> None:
    s = trained_store
    name = "reco-forced-promote"
    register(s.base, name, spec=spec_for(s.uri))
    forced = register(s.not_replayable, name, spec=spec_for(s.uri), force=True).version
    result = _cli(s, "promote", name, forced, "--alias", "prod")
    assert result.exit_code == 0, result.output
    assert f"version {forced} was registered with --force despite: " in result.output
    assert "model.deterministic=false" in result.output
    clean = _cli(s, "promote", name, "1", "--alias", "prod")
    assert clean.exit_code == 0 and "--force" not in clean.output


def test_promote_refuses_a_version_registered_outside_replayml_from_an_unreplayable_run(
    trained_store: TrainedStore,
) -> None:
    # MLflow's own "Register model" skips every check `replayml register` makes
    s = trained_store
    name = "reco-outside"
    register(s.base, name, spec=spec_for(s.uri), alias="prod")
    client = _client(s)
    outside = client.create_model_version(
        name, f"runs:/{s.not_replayable}/model", run_id=s.not_replayable
    ).version
    refused = _cli(s, "promote", name, str(outside), "--alias", "prod")
    assert refused.exit_code == 2, refused.output
    assert "was registered outside replayml and its run" in refused.stderr
    assert "not replayable" in refused.stderr and "model.deterministic=false" in refused.stderr
    assert "--force" in refused.stderr
    assert str(client.get_registered_model(name).aliases["prod"]) == "1"  # nothing moved
    forced = _cli(s, "promote", name, str(outside), "--alias", "prod", "--force")
    assert forced.exit_code == 0, forced.output
    assert "was registered outside replayml" in forced.output
    assert str(client.get_registered_model(name).aliases["prod"]) == str(outside)
    # from a replayable run, MLflow's own registration is fine: a warning, no refusal
    fine = client.create_model_version(name, f"runs:/{s.base}/model", run_id=s.base).version
    moved = _cli(s, "promote", name, str(fine), "--alias", "prod")
    assert moved.exit_code == 0, moved.output
    assert "was registered outside replayml (no replayml.run_id tag)" in moved.output
    assert str(client.get_registered_model(name).aliases["prod"]) == str(fine)


def test_a_model_of_another_kind_does_not_take_an_alias_silently(
    trained_store: TrainedStore,
) -> None:
    # a ranker's scores are not probabilities: whoever loads reco@prod would get another scale
    s = trained_store
    name = "reco-kinds"
    spec = spec_for(s.uri)
    register(s.base, name, spec=spec, alias="prod")
    with pytest.raises(RegistrationRefused, match="a lgbm_ranker model"):
        register(s.ranker, name, spec=spec, alias="prod")
    assert [str(v.version) for v in _client(s).search_model_versions(f"name = '{name}'")] == ["1"]
    ranker = register(s.ranker, name, spec=spec).version  # without the alias: fine
    refused = _cli(s, "promote", name, ranker, "--alias", "prod")
    assert refused.exit_code == 2
    assert "held by version 1, a lgbm model (probabilities)" in refused.stderr
    assert "ranking scores, not probabilities" in refused.stderr
    assert str(_client(s).get_registered_model(name).aliases["prod"]) == "1"
    assert _cli(s, "promote", name, ranker, "--alias", "shadow").exit_code == 0  # a new alias
    assert _cli(s, "promote", name, ranker, "--alias", "prod", "--force").exit_code == 0
    back = _cli(s, "rollback", name, "--alias", "prod")  # a rollback is never blocked
    assert back.exit_code == 0 and "lgbm model" in back.output


def test_a_run_whose_commit_was_never_pushed_is_refused_from_a_clone_without_it(
    trained_store: TrainedStore, tmp_path: Path
) -> None:
    # the run recorded that its commit was on no remote branch; a clone (or a CI box) that does
    # not have the commit cannot check whether it was pushed since, and must not wave it on
    s = trained_store
    name = "reco-unpushed"
    client = _client(s)
    client.set_tag(s.weaker, "replayml.code.on_remote", "false")
    try:
        elsewhere = tmp_path / "other-clone"
        elsewhere.mkdir()
        subprocess.run(["git", "init", "-q", str(elsewhere)], check=True)
        refused = _cli(s, "register", s.weaker, "--name", name, "--project", str(elsewhere))
        assert refused.exit_code == 2, refused.output
        assert "was on no branch of the git remote when the run trained" in refused.stderr
        assert client.search_registered_models(f"name = '{name}'") == []
        forced = _cli(
            s, "register", s.weaker, "--name", name, "--project", str(elsewhere), "--force"
        )
        assert forced.exit_code == 0, forced.output
        assert forced.stderr.count("was on no branch of the git remote") == 1  # said once
        tags = client.get_model_version(name, "1").tags
        assert tags["replayml.forced"] == "true"
    finally:
        client.set_tag(s.weaker, "replayml.code.on_remote", "")


def test_register_and_models_link_the_version_page(trained_store: TrainedStore) -> None:
    s = trained_store
    name = "reco-version-page"
    result = _cli(s, "register", s.base, "--name", name, "--alias", "prod")
    assert result.exit_code == 0, result.output
    run_url = _client(s).get_model_version(name, "1").tags["replayml.run_url"]
    page = f"{run_url.split('/#/')[0]}/#/models/{name}/versions/1"
    assert f"version page: {page}\n" in result.stdout
    table = _cli(s, "models", name)
    assert table.exit_code == 0, table.output
    (line,) = [ln for ln in table.stdout.splitlines() if ln.startswith("| 1 |")]
    assert line.endswith(f" | {page} |")
    (row,) = model_rows(name, spec=spec_for(s.uri))
    assert row.version_url == page
    # the terminal table links the version number to the same page
    from rich.console import Console

    console = Console(record=True, width=250)
    console.print(models_rich(name, [row]))
    assert page in console.export_html(inline_styles=True)


def test_the_printed_version_page_renders_in_the_mlflow_ui(
    trained_store: TrainedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version link `register` prints opens that version's page in a real `mlflow server`
    on this store (read from the DOM headless Chromium renders)."""
    s = trained_store
    name = "reco-page-ui"
    server = start_server(s.root / "mlruns")  # serves the store's own mlflow.db
    try:
        ready(server)
        monkeypatch.setenv("REPLAYML_UI_URL", server.url)
        result = _cli(s, "register", s.weaker, "--name", name, "--alias", "ab")
        assert result.exit_code == 0, result.output
        page = f"{server.url}/#/models/{name}/versions/1"
        assert f"version page: {page}\n" in result.stdout
        dom, png = render_page(page, tmp_path / "chromium")
    finally:
        _stop(server.proc)
    assert "Version 1" in dom and name in dom, f"not the version page (see {png})"
    # its source run's link and replayml's lineage tags are on it
    for expected in (s.weaker, "replayml.alias.ab.previous", "replayml.code.commit"):
        assert expected in dom, f"{expected!r} is not on the rendered version page (see {png})"


def test_registering_a_run_again_warns_with_the_versions_it_already_has(
    trained_store: TrainedStore,
) -> None:
    s = trained_store
    name = "reco-twice"
    first = _cli(s, "register", s.base, "--name", name)
    assert first.exit_code == 0 and "already registered" not in first.output
    _cli(s, "register", s.weaker, "--name", name)  # another run: version 2
    again = _cli(s, "register", s.base, "--name", name)
    assert again.exit_code == 0, again.output  # said, not refused
    assert "registered reco-twice version 3" in again.stdout
    assert (
        f"warning: run {s.base} was already registered as {name} version 1: version 3 is "
        f"another copy of the same model"
    ) in again.stderr
    third = _cli(s, "register", s.base, "--name", name)
    assert f"already registered as {name} versions 1, 3: version 4" in third.stderr


def test_replay_takes_a_registered_version_for_its_run(trained_store: TrainedStore) -> None:
    s = trained_store
    name = "reco-replay-uri"
    v = register(s.not_replayable, name, spec=spec_for(s.uri), force=True).version
    # cheap but real: the version's run is not replayable, so the replay stops after reading it
    result = _cli(s, "replay", f"models:/{name}/{v}", "--project", str(s.root))
    assert result.exit_code == 2, result.output
    said = f"replaying models:/{name}/{v} = {name} version {v} (run {s.not_replayable})"
    assert said in result.stdout
    assert f"replay of run {s.not_replayable}: NOT_REPLAYABLE" in result.stdout
    unset = _cli(s, "replay", f"models:/{name}@prod", "--project", str(s.root))
    assert unset.exit_code == 2
    assert f"no version of '{name}' holds alias 'prod'" in unset.stderr
    assert f"{name} has no aliases yet" in unset.stderr
    for bad in ("reco@prod", "prod", f"models:/{name}"):
        junk = _cli(s, "replay", bad, "--project", str(s.root))
        assert junk.exit_code == 2, junk.output
        assert "models:/NAME@ALIAS or models:/NAME/VERSION" in junk.stderr
        assert "server" not in junk.stderr


def test_version_page_url_quotes_the_name_like_the_ui() -> None:
    from replayml.tracking.registry_store import model_version_url

    spec = spec_for("http://127.0.0.1:5057")
    assert model_version_url(spec, "reco", "3") == "http://127.0.0.1:5057/#/models/reco/versions/3"
    assert model_version_url(spec, "reco eu #2", "1").endswith(
        "/models/reco%20eu%20%232/versions/1"
    )
    # the UI address the source run was made with is used, as for run links
    assert model_version_url(spec, "r", "1", "https://mlflow.team.io/").startswith(
        "https://mlflow.team.io/#/models/r/"
    )
