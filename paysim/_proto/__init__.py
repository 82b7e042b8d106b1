"""Generated code: never edit anything in this package by hand.

Made from the files under ``proto/`` by ``paysim/protogen.py``; regenerate with
``python -m paysim.protogen`` (and verify with ``python -m paysim.protogen --check``).
"""
