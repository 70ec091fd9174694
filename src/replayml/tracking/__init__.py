"""The only package that imports mlflow: open a store, log a run, read it back, link to it."""
