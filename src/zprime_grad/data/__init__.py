"""Files the package ships: the skim corrections (corrections.json, written by make_corrections.py)."""
