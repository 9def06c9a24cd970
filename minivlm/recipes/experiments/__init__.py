"""The experiments of `minivlm experiment NAME`, one module each (see recipes/experiment.py)."""
