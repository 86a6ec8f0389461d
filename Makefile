.PHONY: run test lint format bench chaos install

# Start Offload: SQLite and the filesystem broker, web + worker + beat, demo login printed.
run:
	@scripts/bootstrap.sh run
	@.venv/bin/python manage.py quickstart

# The whole test suite against the real PostgreSQL and RabbitMQ (installs what it needs).
test:
	@scripts/test.sh

lint:
	@scripts/bootstrap.sh dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# Every benchmark in bench/; results in bench/results/latest.json and latest.png, table in
# the README. BENCH_QUICK=1 for smaller workloads; BENCH_TIMEOUT caps each benchmark (s).
bench:
	@scripts/bootstrap.sh bench
	@scripts/services.sh
	.venv/bin/python bench/run_all.py

# The fault-injection suite with larger numbers (prints a table per scenario).
chaos:
	@scripts/bootstrap.sh dev
	@scripts/services.sh
	OFFLOAD_CHAOS_JOBS=$${OFFLOAD_CHAOS_JOBS:-5000} .venv/bin/python -m pytest tests/reliability -s -q -k "chaos or poison" -p no:cacheprovider
