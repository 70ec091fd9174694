"""replayml: reproducible, reviewable ML experiments."""
