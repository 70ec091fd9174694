"""Fitting and evaluating models. No tracking in here: results are returned, not logged."""
