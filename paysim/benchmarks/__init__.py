"""Benchmarks (not tests): measured figures live here, never in timed unit tests.

Developer tools, run from a checkout (``python -m paysim.benchmarks.h2load``
and its siblings): pyproject.toml excludes this package from the wheel and
.dockerignore from the image. Nothing shipped imports it (the import contract
``benchmarks-are-not-shipped``); what the shipped tools share with it lives in
``paysim.loadgen`` (``ports``, ``scrape``, ``spawn``, ``procstat``).
"""
