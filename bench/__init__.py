"""Benchmarks, one module per question: `python -m bench.<name>`."""
