"""Consistent-hashing HTTP load balancer: control plane in FastAPI, data plane on a lean pooled client."""

from app import native

# The one piece of work at import: it must happen before any hot-path module is imported, and every
# entry point (the LB, its worker processes, tests, benchmarks) imports this package first.
native.install()
