"""Compose the project's config outside a Hydra app (params.yaml, replay, tests)."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf

from replayml.config.schema import register_configs

PARAMS_HEADER = (
    "# GENERATED from conf/ by `make params`; edit conf/, not this file "
    "(a test fails when it is stale).\n"
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
