#!/bin/sh
# Entrypoint of the votes-db image (Dockerfile.votes-db): on first start, a cluster on the volume with
# the user $VOTES_DB_USER (password from $VOTES_DB_PASSWORD_FILE, scram-sha-256 over the network) and the
# database $VOTES_DB_NAME; then PostgreSQL in the foreground as the `postgres` user, fsync on.
set -eu

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown -R postgres:postgres "$(dirname "$PGDATA")"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ ! -r "$VOTES_DB_PASSWORD_FILE" ]; then
        echo "votes-db: cannot read the password file $VOTES_DB_PASSWORD_FILE" >&2
        exit 2
    fi
    "$BIN/initdb" -D "$PGDATA" -U "$VOTES_DB_USER" --pwfile="$VOTES_DB_PASSWORD_FILE" \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    # Local socket: the postgres OS user only (peer, mapped to the database user for the set-up below).
    {
        echo "local all all peer map=owner"
        echo "host all all 0.0.0.0/0 scram-sha-256"
        echo "host all all ::/0 scram-sha-256"
    } >"$PGDATA/pg_hba.conf"
    echo "owner postgres $VOTES_DB_USER" >"$PGDATA/pg_ident.conf"
    echo "CREATE DATABASE $VOTES_DB_NAME OWNER $VOTES_DB_USER" \
        | "$BIN/postgres" --single -D "$PGDATA" -j postgres >/dev/null
    echo "votes-db: created database $VOTES_DB_NAME for user $VOTES_DB_USER in $PGDATA" >&2
fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp -c fsync=on \
    -c synchronous_commit=on -c full_page_writes=on
