"""Experiments A-1..A-5: scripts that drive the load balancer over HTTP and write CSV, PNG and REPORT.md.

Run one with `python -m experiments.a1 --help`, all of them with `make experiments`.
"""
