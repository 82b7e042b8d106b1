"""``python -m paysim.benchmarks.lifecycle``: see the package docstring."""

from paysim.benchmarks.lifecycle.cli import main

raise SystemExit(main())
