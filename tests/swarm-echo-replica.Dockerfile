# A test replica for the Swarm tests (tests/swarm_support.py): tests/echo_replica.py, which answers the
# contract's /home and /heartbeat like the real replica, plus /slow?secs=S for requests kept in flight.
# On SIGTERM it lets the requests it has finish (uvicorn's graceful shutdown), as the real replica does.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check "uvicorn[standard]>=0.29"
WORKDIR /srv
COPY tests/__init__.py tests/echo_replica.py /srv/tests/
USER 10001:10001
EXPOSE 5000
# echo_replica serves an inherited socket (--fd): bind port 5000 here, then exec it.
CMD ["python", "-c", "import os, socket, sys\ns = socket.create_server(('0.0.0.0', 5000))\nos.set_inheritable(s.fileno(), True)\nos.execvp(sys.executable, [sys.executable, '-m', 'tests.echo_replica', '--fd', str(s.fileno())])\n"]
