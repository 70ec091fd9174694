"""The replayml error family: every message says what failed, the key=value and the fix."""

from __future__ import annotations


class ReplaymlError(Exception):
    """Base class for errors replayml reports to the user (exit code 2 at the CLI)."""

    exit_code = 2


class ConfigError(ReplaymlError):
    """A configuration value is invalid in a way the schema cannot express."""


class DataVersionError(ReplaymlError):
    """The data on disk is not the version `data.dvc` says it is, or it cannot be found."""


class DataSchemaError(ReplaymlError):
    """A data table lacks a configured column or has the wrong type."""


class TrackingError(ReplaymlError):
    """The MLflow tracking store cannot be reached or refused a request."""


class RunNotFoundError(ReplaymlError):
    """An MLflow run id does not exist (or is not a replayml run) in the given store."""


class DirtyTreeError(ReplaymlError):
    """The git working tree has changes that cannot be recorded."""


class RunKilled(BaseException):
    """Raised in the training process when it receives SIGTERM (the run is marked KILLED)."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a terminated process
