"""Skim NanoAOD into resident or on-disk ColumnChunks (see runner.py, resident.py, store.py)."""
