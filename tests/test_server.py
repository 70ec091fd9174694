# ruff: noqa: F811  (pytest fixtures imported from server_fixtures are used as arguments)
"""The team tracking server: train, review, register and promote through a real `mlflow server`
over HTTP; the printed run link renders in headless Chromium; with MLflow's basic-auth app,
401 and 403 become clear messages and credentials never leak into output or records."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from conftest import run_train_py, train
from replayml.cli import app
from server_fixtures import (  # noqa: F401  (fixtures are used by name)
    MlflowServer,
    _servers,
    auth_server,
    mlflow_server,
    render_page,
)

pytestmark = pytest.mark.slow
WEAKER = ["dates=last_7d", "model.num_leaves=2", "model.num_boost_round=1"]


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def _copy_project(template: Path, base: Path) -> Path:
    root = base / "proj"
    shutil.copytree(template, root, symlinks=True)
    return root


def replayml(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m replayml ARGS` as a user runs it, with only the given credentials."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    return subprocess.run(
        [sys.executable, "-m", "replayml", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
        check=False,
    )


# ------------------------------------------------------------------------ plain server


@dataclass(frozen=True)
class HttpRuns:
    base: str
    weaker: str
    base_url: str


@pytest.fixture(scope="module")
def http_runs(
    mlflow_server: MlflowServer,
    template_project: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> HttpRuns:
    """Two runs trained into the team server over HTTP (the pipeline, in-process)."""
    root = _copy_project(template_project, tmp_path_factory.mktemp("http-project"))
    uri = f"tracking.uri={mlflow_server.url}"
    base = train(root, [uri, "tracking.run_name=http-base"])
    weaker = train(root, [uri, "tracking.run_name=http-weaker", *WEAKER])
    assert not (root / "mlruns").exists(), "nothing may go to the local store"
    return HttpRuns(base.run_id, weaker.run_id, base.url)


def test_review_register_promote_through_the_server(
    http_runs: HttpRuns,
    mlflow_server: MlflowServer,
) -> None:
    url = mlflow_server.url
    runner = CliRunner()

    def cli(*args: str):  # noqa: ANN202
        return runner.invoke(app, [*args, "--tracking-uri", url], catch_exceptions=False)

    review = cli("review", http_runs.weaker, "--baseline", http_runs.base, "--fail-on", "test_auc")
    assert review.exit_code == 1, review.output  # the near-trivial model regressed
    assert f"]({url}/#/experiments/" in review.stdout
    assert f"[{http_runs.base}]({http_runs.base_url})" in review.stdout

    first = cli("register", http_runs.base, "--name", "team-reco", "--alias", "prod",
                "--ab-label", "control", "--ab-group", "exp-7")  # fmt: skip
    assert first.exit_code == 0, first.output
    second = cli("register", http_runs.weaker, "--name", "team-reco", "--alias", "ab",
                 "--ab-label", "treatment", "--ab-group", "exp-7")  # fmt: skip
    assert second.exit_code == 0, second.output
    promoted = cli("promote", "team-reco", "2", "--alias", "prod", "--expect-version", "1")
    assert promoted.exit_code == 0, promoted.output
    assert "team-reco@prod: version 1 -> 2 (promote by" in promoted.stdout

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    model = client.get_registered_model("team-reco")
    assert {k: str(v) for k, v in model.aliases.items()} == {"prod": "2", "ab": "2"}
    mv = client.get_model_version("team-reco", "2")
    assert mv.run_id == http_runs.weaker
    assert mv.tags["replayml.run_url"].startswith(f"{url}/#/experiments/")
    assert mv.tags["replayml.alias.prod.previous"] == "1"
    # the model's files went through the server's artifact proxy to its folder
    assert any(mlflow_server.artifacts.rglob("MLmodel"))

    table = cli("models", "team-reco")
    assert table.exit_code == 0, table.output
    assert re.search(r"\| 2 \| [^|]+ \| ab, prod \| treatment \| exp-7 \|", table.stdout)
    # the baseline is whatever holds @prod: now the weaker run itself
    same = cli("review", http_runs.weaker, "--name", "team-reco", "--fail-on", "test_auc")
    assert same.exit_code == 0, same.output
    assert "`models:/team-reco@prod` = team-reco version 2" in same.stdout
    back = cli("rollback", "team-reco", "--alias", "prod")
    assert back.exit_code == 0, back.output
    assert str(client.get_registered_model("team-reco").aliases["prod"]) == "1"


def test_printed_run_link_renders_in_chromium(
    http_runs: HttpRuns,
    mlflow_server: MlflowServer,
    tmp_path: Path,
) -> None:
    """The link `replayml review` prints opens the run's page in the MLflow UI, which shows the
    run name, a param, a metric and a replayml tag (read from the rendered DOM)."""
    printed = CliRunner().invoke(
        app, ["review", http_runs.base, "--tracking-uri", mlflow_server.url]
    )
    assert printed.exit_code == 0, printed.output
    link = re.search(r"- Run: \[[0-9a-f]{32}\]\((\S+)\)", printed.stdout)
    assert link is not None, printed.stdout
    assert link.group(1) == http_runs.base_url
    dom, png = render_page(link.group(1), tmp_path / "chromium")
    for expected in ("http-base", "model.learning_rate", "test_auc", "replayml.data.dvc_hash"):
        assert expected in dom, f"{expected!r} is not on the rendered run page (see {png})"
    assert png.stat().st_size > 20_000, f"the screenshot {png} looks empty"


# ------------------------------------------------------------------------- basic auth


@dataclass
class AuthRuns:
    server: MlflowServer
    run_id: str
    outputs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def auth_runs(
    auth_server: MlflowServer,
    template_project: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AuthRuns:
    """A run trained with `python train.py` as the admin (credentials from the environment
    only), registered as version 1 of `secure-reco`, and a READ-only user."""
    s = auth_server
    root = _copy_project(template_project, tmp_path_factory.mktemp("auth-project"))
    env = {"MLFLOW_TRACKING_URI": s.url, **s.creds("admin")}
    proc = run_train_py(root, "tracking.run_name=auth-base", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r"run: \S+/runs/([0-9a-f]{32})", proc.stdout)
    assert found, proc.stdout
    assert "View run" not in proc.stdout  # one run link: ours, not MLflow's second one
    runs = AuthRuns(s, found.group(1), [proc.stdout, proc.stderr])
    args = ["register", runs.run_id, "--name", "secure-reco", "--alias", "prod"]
    # versions 1 and 2 (a process with verbose logs, then in-process); prod ends on 2, with 1
    # recorded as its previous holder
    reg = replayml(*args, "--tracking-uri", s.url, "-v", env=s.creds("admin"))
    runs.outputs += [reg.stdout, reg.stderr]
    assert reg.returncode == 0, reg.stderr
    again = _cli(runs, *args, "-v", env=s.creds("admin"))
    assert again.exit_code == 0, again.output
    s.create_user("reader", "reader-" + os.urandom(8).hex())
    return runs


def _cli(runs: AuthRuns, *args: str, env: dict[str, str] | None = None):  # noqa: ANN202
    result = CliRunner().invoke(
        app, [*args, "--tracking-uri", runs.server.url], env=env, catch_exceptions=False
    )
    runs.outputs += [result.stdout, result.stderr]
    return result


def test_no_credentials_is_a_clear_401(auth_runs: AuthRuns) -> None:
    for args in (["review", auth_runs.run_id], ["models", "secure-reco"]):
        result = _cli(auth_runs, *args)
        assert result.exit_code == 2, result.output
        assert "not authenticated (401)" in result.stderr, result.stderr
        assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in result.stderr
    # the same through a real process: a message, no traceback
    proc = replayml("models", "secure-reco", "--tracking-uri", auth_runs.server.url)
    auth_runs.outputs += [proc.stdout, proc.stderr]
    assert proc.returncode == 2 and "not authenticated (401)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_read_only_user_gets_a_clear_403_and_changes_nothing(auth_runs: AuthRuns) -> None:
    s = auth_runs.server
    reader = s.creds("reader")
    attempts = {
        "register": ["register", auth_runs.run_id, "--name", "secure-reco", "--alias", "ab"],
        "promote": ["promote", "secure-reco", "1", "--alias", "prod", "--expect-version", "2"],
        "rollback": ["rollback", "secure-reco", "--alias", "prod"],
    }
    for what, args in attempts.items():
        result = _cli(auth_runs, *args, env=reader)
        assert result.exit_code == 2, f"{what}: {result.output}"
        assert "permission denied (403)" in result.stderr, f"{what}: {result.stderr}"
        assert "EDIT (or MANAGE) permission" in result.stderr
    # reading is allowed to the reader
    table = _cli(auth_runs, "models", "secure-reco", env=reader)
    assert table.exit_code == 0, table.output
    assert re.search(r"\| 2 \| [^|]+ \| prod \|", table.stdout)
    # and nothing changed: two versions, prod on 2, no alias ab, no claim left behind
    client = MlflowClient(tracking_uri=s.url, registry_uri=s.url)
    with _env(s.creds("admin")):
        model = client.get_registered_model("secure-reco")
        versions = client.search_model_versions("name = 'secure-reco'")
    assert {k: str(v) for k, v in model.aliases.items()} == {"prod": "2"}
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert not any(k.startswith("replayml.alias.ab.") for k in model.tags)
    last = json.loads(model.tags["replayml.alias.prod.last_move"])
    assert json.loads(model.tags["replayml.alias.prod.claim"])["token"] == last["token"]


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_credentials_never_printed_or_recorded(auth_runs: AuthRuns) -> None:
    s = auth_runs.server
    secrets = [s.admin_password, *s.users.values()]
    assert all(len(p) > 10 for p in secrets)
    assert len(auth_runs.outputs) >= 4  # training and registering, at least
    for text in auth_runs.outputs:
        for secret in secrets:
            assert secret not in text
    client = MlflowClient(tracking_uri=s.url, registry_uri=s.url)
    with _env(s.creds("admin")):
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        model = client.get_registered_model("secure-reco")
        versions = client.search_model_versions("name = 'secure-reco'")
    assert any(r.info.run_id == auth_runs.run_id for r in runs)
    records = [json.dumps([r.data.params, r.data.tags]) for r in runs]
    records += [json.dumps(model.tags)] + [json.dumps(v.tags) for v in versions]
    for record in records:
        for secret in secrets:
            assert secret not in record
    # nor in anything the server stored: the tracking database and every artifact
    stored = [s.db, *(p for p in s.artifacts.rglob("*") if p.is_file())]
    assert len(stored) > 5
    for path in stored:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret[:6]}… found in {path}"


def test_the_readme_team_server_is_started_as_make_ui_starts_mlflow() -> None:
    """The MLflow settings `make ui` gives `mlflow server` (no job runners: replayml submits
    no jobs, and each runner is a process of its own) are in the README's team command too."""
    repo = Path(__file__).resolve().parents[1]
    recipe = (repo / "Makefile").read_text().split("\nui:", 1)[1].split("mlflow server", 1)[0]
    make_ui = set(re.findall(r"\bMLFLOW_[A-Z_]+=\S+", recipe))
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in make_ui, recipe
    blocks = re.findall(r"```bash\n(.*?)```", (repo / "README.md").read_text(), re.DOTALL)
    (team,) = [b for b in blocks if "mlflow server --host 0.0.0.0" in b]
    command = team.split("mlflow server", 1)[0].rsplit("\n\n", 1)[-1]  # what precedes it
    assert make_ui <= set(re.findall(r"\bMLFLOW_[A-Z_]+=\S+", command)), team
