"""Train one model with full lineage: `python train.py model=lgbm dates=last_14d` (-m sweeps)."""

import os
import sys
from pathlib import Path

# this checkout's code first, even where another checkout's is installed: a queued `dvc exp
# run` trains in a copy of the project (.dvc/tmp/exps/...) while the workspace may be edited
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

try:
    import hydra
    from omegaconf import DictConfig
except ModuleNotFoundError as exc:  # run outside the project's environment
    sys.exit(
        f"error: {exc.name} is not installed in {sys.executable}: run `make install`, then "
        f"`source .venv/bin/activate` (or call .venv/bin/python train.py)"
    )

from replayml.config.schema import register_configs  # noqa: E402
from replayml.redact import guard_output  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Compose, hand over to the pipeline, print the run link."""
    from replayml.entry import train_from_hydra

    return train_from_hydra(cfg)


if __name__ == "__main__":
    # paths in conf/ (data, store, outputs) are relative to the project root, wherever the
    # command was started: `cd conf && python ../train.py` works like `python train.py`
    os.chdir(Path(__file__).resolve().parent)
    guard_output(sys.argv[1:])  # secrets in the overrides never reach the console or a log
    from replayml.entry import exit_now

    try:
        main()
    except KeyboardInterrupt:  # a sweep's Ctrl-C (a single run says its own line)
        print("error: interrupted (Ctrl-C); jobs under way are marked KILLED", file=sys.stderr)
        exit_now(130)  # the exit handlers summarise a sweep's parent run (FAILED)
    exit_now(0)  # everything is written: skip the interpreter's slow teardown
