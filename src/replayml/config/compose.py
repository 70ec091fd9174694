"""Compose the project's config outside a Hydra app (params.yaml, replay, tests)."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf

from replayml.config.schema import register_configs

PARAMS_HEADER = (
    "# GENERATED from conf/ by `make params`; edit conf/, not this file "
    "(`dvc repro` refuses it when it is stale).\n"
)


def compose(config_dir: Path, overrides: list[str]) -> dict:
    """The composed config (without the `hydra` node) as a plain dict, interpolations kept."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    container = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container


def params_yaml(config_dir: Path, overrides: list[str]) -> str:
    """params.yaml text: the composed default config with a header saying it is generated."""
    return PARAMS_HEADER + yaml.safe_dump(compose(config_dir, overrides), sort_keys=False)


def composed_defaults(config_dir: Path) -> dict[str, object]:
    """The default composition of `config_dir`, flattened to dotted keys (what params.yaml
    is compared with; compose once and pass it to the functions below)."""
    return _flat(compose(config_dir, []))


def stale_params(
    config_dir: Path, params_file: Path, fresh: dict[str, object] | None = None
) -> list[str]:
    """The keys where `params_file` differs from the default composition of `config_dir`
    (`fresh`, when already composed), each as `key: <in params.yaml> vs <from conf/>`
    (empty when it is fresh)."""
    fresh = composed_defaults(config_dir) if fresh is None else fresh
    found = _flat(yaml.safe_load(params_file.read_text()) or {})
    missing = "(absent)"
    return [
        f"{key}: {found.get(key, missing)} in {params_file.name}, {fresh.get(key, missing)} "
        f"from conf/"
        for key in sorted(fresh.keys() | found.keys())
        if fresh.get(key, missing) != found.get(key, missing)
    ]


def params_changes(
    config_dir: Path, params_file: Path, fresh: dict[str, object] | None = None
) -> list[str]:
    """What `params_file` sets differently from the default composition of `config_dir`
    (`fresh`, when already composed), as `key=value` overrides (a DVC experiment's `-S`
    values, as DVC wrote them into params.yaml); keys conf/ leaves to an interpolation (the
    machine's thread count) are not listed."""
    import json

    fresh = composed_defaults(config_dir) if fresh is None else fresh
    found = _flat(yaml.safe_load(params_file.read_text()) or {})
    out = []
    for key in sorted(found):
        value = found[key]
        base = fresh.get(key, "(absent)")
        if value == base or (isinstance(base, str) and base.startswith("${")):
            continue
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        out.append(f"{'' if key in fresh else '+'}{key}={'null' if value is None else text}")
    return out


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


#: keys the DVC stages set in their own command line: a `-S` value for them has no effect
STAGE_OWNED = ("output_dir", "features_dir")


#: DVC removes a stage's outputs before its command runs, so a refusal leaves them deleted
RESTORE_OUTS = (
    "DVC removed the stage's outputs before running it: `git checkout -- artifacts && dvc "
    "checkout` brings back the committed ones"
)


def check_params_fresh(
    config_dir: Path, params_file: Path, fresh: dict[str, object] | None = None
) -> None:
    """Refuse a params.yaml that no longer matches conf/ (the single source of truth): a
    hand edit, or values left by `dvc exp apply`. Not for `dvc exp run`, whose `-S` values
    DVC composes into params.yaml itself."""
    from replayml.errors import ReplaymlError

    stale = stale_params(config_dir, params_file, fresh)
    if stale:
        shown = "; ".join(stale[:3]) + (f" (and {len(stale) - 3} more)" if stale[3:] else "")
        raise ReplaymlError(
            f"{params_file} is stale: {shown}. conf/ is the source of the stages' config: "
            f"regenerate it with `make params` and commit it (values from `dvc exp apply` go "
            f"into conf/ first); for a one-off variant use `dvc exp run -S key=value`. "
            f"{RESTORE_OUTS}"
        )


def check_stage_owned(changes: list[str]) -> None:
    """Refuse `-S` values for keys the stages' command lines set themselves (they would be
    ignored without a word)."""
    from replayml.errors import ConfigError

    owned = [c for c in changes if c.lstrip("+").split("=", 1)[0] in STAGE_OWNED]
    if owned:
        raise ConfigError(
            f"{', '.join(owned)}: the DVC stages set {' and '.join(STAGE_OWNED)} in dvc.yaml's "
            f"cmd, so this value would be ignored; drop `-S {owned[0]}` (and restore "
            f"params.yaml with `make params`). {RESTORE_OUTS}"
        )
