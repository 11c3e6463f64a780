"""`python -m spinegrade` runs the command line."""

from spinegrade.cli import main

main()
