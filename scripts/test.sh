#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks style, runs every test against the
# real PostgreSQL and RabbitMQ. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh dev
if ! scripts/services.sh; then
  echo "test: PostgreSQL and RabbitMQ are required (see README, 'Running the tests')." >&2
  exit 1
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure." >&2
  exit 1
fi
exit $status
