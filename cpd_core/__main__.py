"""`python -m cpd_core` runs the command line (see cpd_core.cli)."""

from cpd_core.cli import main

main()
