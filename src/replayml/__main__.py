"""`python -m replayml` runs the replayml command."""

from replayml.cli import main

main()
