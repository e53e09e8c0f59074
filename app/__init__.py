"""Consistent-hashing HTTP load balancer: control plane in FastAPI, data plane on a lean pooled client."""
