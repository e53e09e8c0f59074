"""Orchestrators start and stop replicas; the pool decides when."""
