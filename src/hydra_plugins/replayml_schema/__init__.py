"""Hydra discovers this plugin package and imports it: it registers replayml's config schemas
and resolvers, so any composition of conf/ (DVC's `dvc exp run` included) validates against
the same schemas as `train.py`."""

from replayml.config.schema import register_configs

register_configs()
