"""The seed's design, for the benchmark's reference row: Flask dev server, `requests.get` per request.

`python -m bench.seed_lb --port P --replicas http://a:1,...` proxies every path to the replica that
md5(id) % N picks, as the seed did (no pooling, no streaming, one OS thread per request).
"""

from __future__ import annotations

import argparse
import hashlib
import random

import requests
from flask import Flask, Response, request


def make_app(replicas: list[str]) -> Flask:
    app = Flask(__name__)

    @app.route("/", defaults={"path": ""})
    @app.route("/<path:path>")
    def proxy(path: str) -> Response:
        key = request.args.get("id") or str(random.randint(100_000, 999_999))
        index = int(hashlib.md5(key.encode()).hexdigest(), 16) % len(replicas)
        upstream = requests.get(f"{replicas[index]}/{path}", params=request.args, timeout=10)
        content_type = upstream.headers.get("content-type")
        return Response(upstream.content, status=upstream.status_code, content_type=content_type)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replicas", required=True, help="comma-separated base URLs")
    args = parser.parse_args(argv)
    make_app(args.replicas.split(",")).run(host="127.0.0.1", port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
