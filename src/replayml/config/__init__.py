"""Typed configuration: dataclass schemas for Hydra and the resolution of relative dates."""
