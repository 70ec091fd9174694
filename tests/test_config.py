"""Config composition, schema errors (A1-A7) and date resolution."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from conftest import REPO, all_runs, compose_cfg, run_train_py
from replayml.config.compose import compose
from replayml.config.resolve import resolve_dates, to_run_config
from replayml.config.schema import DatesConfig, DatesMode, ModelKind
from replayml.errors import ConfigError

GROUPS = ["data", "dates", "preprocessing", "features", "model", "tracking", "experiment"]


def _options() -> list[tuple[str, str]]:
    return [
        (group, p.stem) for group in GROUPS for p in sorted((REPO / "conf" / group).glob("*.yaml"))
    ]


_DAYS = {
    "train_start": "2024-04-01",
    "train_end": "2024-04-10",
    "valid_start": "2024-04-11",
    "valid_end": "2024-04-11",
    "test_start": "2024-04-12",
    "test_end": "2024-04-12",
}


@pytest.mark.parametrize(("group", "option"), _options())
def test_every_config_file_composes(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if group == "dates" and option == "absolute":
        overrides += [
            f"dates.{k}=2024-04-0{i}"
            for i, k in enumerate(
                ["train_start", "train_end", "valid_start", "valid_end", "test_start", "test_end"],
                start=1,
            )
        ]
    cfg = to_run_config(compose(REPO / "conf", overrides))
    assert cfg.data.name
    assert isinstance(cfg.model.kind, ModelKind)


def test_experiment_preset_says_only_what_differs() -> None:
    cfg = to_run_config(compose(REPO / "conf", ["experiment=ranker_28d"]))
    assert cfg.model.kind is ModelKind.lgbm_ranker
    assert cfg.dates.train_days == 28


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.lerning_rate=0.1", "lerning_rate"),  # A1
        ("+model.lerning_rate=0.1", "Key 'lerning_rate' not in 'ModelConfig'"),  # added, not set
        ("model=xgb", "Available options"),  # A2
        ("model.learning_rate=[1,2", "mismatched input|no viable|extraneous|Error parsing"),  # A3
        ("model.num_leaves=abc", "num_leaves"),  # A4
        ("dates.mode=sometimes", "mode"),
        ("model.num_leaves=1", "model.num_leaves=1 is out of range: it must be 2 <= num_leaves"),
        ("experiment=quik", "Could not find 'experiment/quik'"),  # not the defaults, silently
        ("dates.train_start=2024-04-01", "dates.train_start=2024-04-01: relative windows"),
    ],
)
def test_bad_overrides_fail_before_anything_is_written(
    project: Path, override: str, expected: str
) -> None:
    proc = run_train_py(project, override)
    assert proc.returncode != 0
    assert any(part in proc.stderr for part in expected.split("|")), proc.stderr[-2000:]
    assert all_runs(project) == []
    assert not (project / "outputs").exists() or not any((project / "outputs").rglob("*.json"))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("learning_rate", 0.0, "model.learning_rate=0.0 is out of range: it must be 0.0 < "),
        ("feature_fraction", 1.5, "feature_fraction <= 1 (e.g. model.feature_fraction=0.9)"),
        ("num_boost_round", 0, "1 <= num_boost_round (e.g. model.num_boost_round=400)"),
        ("lambda_l2", -1.0, "0.0 <= lambda_l2"),
        ("bagging_fraction", 0.5, "bagging_fraction=0.5 has no effect with model.bagging_freq=0"),
    ],
)
def test_model_values_outside_lightgbms_ranges_are_named(
    key: str, value: float, message: str
) -> None:
    from replayml.pipeline import check_model

    model = to_run_config(compose(REPO / "conf", [])).model
    check_model(model)  # the defaults are in range
    setattr(model, key, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_model(model)


@pytest.mark.parametrize("override", ["+model.lerning_rate=0.1", "+tracking.extra=1", "+nope=1"])
def test_keys_added_with_plus_are_refused_unless_the_schema_has_them(override: str) -> None:
    with pytest.raises(ConfigError, match="not in"):
        to_run_config(compose(REPO / "conf", [override]))
    # free-form sections still take new keys
    assert to_run_config(compose(REPO / "conf", ["+tags.ticket=RECO-12"])).tags == {
        "ticket": "RECO-12"
    }


def test_wrong_type_names_key_and_type(project: Path) -> None:
    proc = run_train_py(project, "model.num_leaves=abc")
    assert "model.num_leaves" in proc.stderr or "num_leaves" in proc.stderr
    assert "int" in proc.stderr.lower()


def test_unknown_group_option_lists_choices(project: Path) -> None:
    proc = run_train_py(project, "model=xgb")
    for option in ("lgbm", "lgbm_ranker", "popularity"):
        assert option in proc.stderr


def test_missing_required_value_fails_naming_key(project: Path) -> None:  # A5
    proc = run_train_py(project, "dates=absolute")
    assert proc.returncode != 0
    assert "train_start" in proc.stderr
    assert all_runs(project) == []


def test_broken_interpolation_fails_before_side_effects(project: Path) -> None:  # A6
    proc = run_train_py(project, "tracking.run_name=${nope.x}")
    assert proc.returncode != 0
    assert "nope" in proc.stderr
    assert all_runs(project) == []


def test_an_output_dir_that_cannot_be_made_fails_in_one_line_before_any_run(
    project: Path,
) -> None:
    (project / "results").write_text("a file where a folder is asked for\n")
    proc = run_train_py(project, "model=popularity", "output_dir=results/today")
    assert proc.returncode != 0
    assert "/results/today: cannot create the folder (Not a directory)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert all_runs(project) == []


def test_relative_dates_anchor_on_data_not_today() -> None:
    w = resolve_dates(DatesConfig(train_days=14), date(2024, 3, 1), date(2024, 4, 29))
    assert str(w.test) == "2024-04-29..2024-04-29"
    assert str(w.valid) == "2024-04-28..2024-04-28"
    assert str(w.train) == "2024-04-14..2024-04-27"


@pytest.mark.parametrize(
    ("dates", "match"),
    [
        (
            DatesConfig(train_days=90),
            "fall outside the data.*2024-03-01..2024-04-29.*train_days=58",
        ),
        (DatesConfig(anchor="2024-05-03"), r"Set dates.anchor to a day in that range"),
        (DatesConfig(valid_days=30, test_days=30), "too short for dates.valid_days=30"),
        (DatesConfig(train_days=0), "train_days=0"),
        (
            DatesConfig(
                mode=DatesMode.absolute,
                train_start="2024-04-10",
                train_end="2024-04-20",
                valid_start="2024-04-15",
                valid_end="2024-04-16",
                test_start="2024-04-17",
                test_end="2024-04-17",
            ),
            "in order",
        ),
        (
            DatesConfig(
                mode=DatesMode.absolute,
                train_start="2024-04-10",
                train_end="2024-04-05",
                valid_start="2024-04-15",
                valid_end="2024-04-16",
                test_start="2024-04-17",
                test_end="2024-04-17",
            ),
            "ends before it starts",
        ),
        (
            DatesConfig(
                mode=DatesMode.absolute,
                train_start="2024-04-10",
                train_end="2024-04-11",
                valid_start="2024-04-15",
                valid_end="2024-04-16",
                test_start="2024-05-17",
                test_end="2024-05-17",
            ),
            "outside the data.*dates.test_end <= 2024-04-29",
        ),
        (DatesConfig(mode=DatesMode.absolute, train_start="April"), "not a date"),
        (
            DatesConfig(mode=DatesMode.absolute, train_days=3, **_DAYS),
            r"dates.train_days=3 with dates.mode=absolute.*= 10 days",
        ),
        (
            DatesConfig(mode=DatesMode.absolute, anchor="2024-04-25", **_DAYS),
            r"dates.anchor=2024-04-25 with dates.mode=absolute.*test_end=2024-04-12",
        ),
    ],
)
def test_bad_windows_raise_config_error(dates: DatesConfig, match: str) -> None:  # A7
    with pytest.raises(ConfigError, match=match):
        resolve_dates(dates, date(2024, 3, 1), date(2024, 4, 29))


def test_absolute_windows_may_carry_their_own_day_counts() -> None:
    # every run records its windows as absolute dates with the matching counts and anchor
    recorded = DatesConfig(
        mode=DatesMode.absolute, train_days=10, valid_days=1, test_days=1,
        anchor="2024-04-12", **_DAYS,
    )  # fmt: skip
    assert resolve_dates(recorded, date(2024, 3, 1), date(2024, 4, 29)).train.days == 10


def test_the_suggested_training_window_fits() -> None:
    first, last = date(2024, 3, 1), date(2024, 4, 29)
    with pytest.raises(ConfigError, match=r"dates.train_days=(\d+)") as err:
        resolve_dates(DatesConfig(train_days=90), first, last)
    days = int(err.value.args[0].split("dates.train_days=")[1].split()[0])
    assert resolve_dates(DatesConfig(train_days=days), first, last).train.start == first


def test_window_outside_data_creates_no_run(project: Path) -> None:  # A7 end to end
    proc = run_train_py(project, "dates.train_days=200")
    assert proc.returncode == 2
    assert "dates" in proc.stderr and "2024-03-01..2024-04-29" in proc.stderr
    assert all_runs(project) == []


def test_params_yaml_is_generated_from_conf_and_fresh() -> None:
    from replayml.config.compose import params_yaml

    committed = (REPO / "params.yaml").read_text()
    assert committed.startswith("# GENERATED")
    assert committed == params_yaml(REPO / "conf", []), "params.yaml is stale: run `make params`"


def test_params_yaml_validates_against_schema(tmp_path: Path) -> None:
    import yaml

    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["model"]["num_leaves"] = "abc"
    with pytest.raises(ConfigError, match="num_leaves"):
        to_run_config(doc)


def test_compose_cfg_helper_matches_train_py_defaults(project: Path) -> None:
    cfg = compose_cfg(project)
    assert cfg.model.deterministic is True
    assert cfg.model.num_threads >= 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("features.smoothing=0", "features.smoothing=0.0 must be greater than 0"),
        ("features.builders=[user_history,user_history]", "lists user_history more than once"),
        ("features.lookback_days=[7,7]", "features.lookback_days=[7, 7] lists 7 more than once"),
        ("preprocessing.bot_max_events_per_day=-5", "bot_max_events_per_day=-5 must be at least"),
        ("preprocessing.min_item_support=-1", "min_item_support=-1 must be 0"),
    ],
)
def test_values_that_would_fail_after_training_are_refused_first(
    override: str, message: str
) -> None:
    # each of these used to train, then leave a FAILED run (NaN scores, a LightGBM error) or
    # fail after the data was read with a message that did not name the value
    from replayml.pipeline import check_config

    cfg = to_run_config(compose(REPO / "conf", [override]))
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(cfg, REPO)
