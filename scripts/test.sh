#!/usr/bin/env bash
# Runs the whole test suite with .venv's pytest (run ./scripts/dev-setup.sh first).
#
# The PostgreSQL-backed tests read GYOZA_TEST_POSTGRES_URL. When it is unset and a PostgreSQL
# server answers on 127.0.0.1:5432, they use its `postgres` database as user `postgres`
# (trust auth); otherwise they skip, saying why (under CI=true they fail instead).
# Arguments go to pytest:   ./scripts/test.sh -m e2e -x
# The tests run in parallel, two pytest-xdist workers per core (many tests wait on timers,
# sockets and processes more than they compute); GYOZA_TEST_WORKERS=N sets the number, 0 runs
# them in this process, as plain pytest does.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x .venv/bin/pytest ]]; then
  echo "test.sh: .venv has no pytest; run ./scripts/dev-setup.sh first" >&2
  exit 2
fi

if [[ -z ${GYOZA_TEST_POSTGRES_URL:-} ]]; then
  if .venv/bin/python -c 'import socket; socket.create_connection(("127.0.0.1", 5432), 1).close()' \
    2>/dev/null; then
    export GYOZA_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
    echo "test.sh: PostgreSQL tests use $GYOZA_TEST_POSTGRES_URL" >&2
  else
    echo "test.sh: no PostgreSQL on 127.0.0.1:5432 and GYOZA_TEST_POSTGRES_URL unset:" \
      "the PostgreSQL tests will skip" >&2
  fi
fi

status=0
workers=${GYOZA_TEST_WORKERS:-$((2 * $(nproc)))}
parallel=()
[[ $workers != 0 ]] && parallel=(-n "$workers")
.venv/bin/pytest "${parallel[@]}" "$@" || status=$?
if [[ $status -eq 5 ]]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
fi
exit "$status"
