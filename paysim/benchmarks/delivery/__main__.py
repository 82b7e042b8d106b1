"""``python -m paysim.benchmarks.delivery``: see the package docstring."""

from paysim.benchmarks.delivery.cli import main

raise SystemExit(main())
