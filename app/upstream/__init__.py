"""The LB's one HTTP/1.1 client to replicas: keep-alive connection pools, streaming connections, errors.

Below both the data plane (which proxies through it) and the control plane (whose lifecycle owns one pool
per replica and whose health probes use it), so neither imports the other for it.
"""
