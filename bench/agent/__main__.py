"""`python -m edgekd.bench.agent ...`: the agent from an installed edgekd (its workers start the same way)."""
import sys

from edgekd.bench.agent.cli import main

sys.exit(main())
