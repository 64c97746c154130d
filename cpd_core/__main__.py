"""`python -m cpd_core` runs the command line (see cpd_core.cli).

Stage: interface (the command line).
"""

from cpd_core.cli import main

main()
