"""minivlm's benchmarks against torch: `python -m benchmarks` runs the suite (see run.py)."""
