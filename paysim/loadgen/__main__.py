"""``python -m paysim.loadgen`` is ``paysim bench``."""

from paysim.loadgen.main import main

if __name__ == "__main__":  # worker processes are spawned: they re-import this module
    raise SystemExit(main())
