# catbird-db: every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/catbird_demo
SCALE ?= 1

.PHONY: install test test-deep test-pgbouncer lint demo migrate seed plan-test bench bench-docs \
	bench-quick check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

# Every test, the plan tests included (they add about 15 s: one seed per session).
test: $(STAMP)
	$(BIN)/pytest -q

# The entity tests again, with every `db` reaching PostgreSQL through a real PgBouncer in
# transaction pooling mode (transaction_pooler set, LISTEN direct): about 60 s. Needs the
# pgbouncer binary; the tests start and stop their own (see docs/pgbouncer.md).
PGBOUNCER_TESTS = tests/test_messages*.py tests/test_members.py tests/test_conversations.py \
	tests/test_key_packages*.py tests/test_welcomes*.py tests/test_blobs*.py tests/test_devices.py \
	tests/test_member_devices.py tests/test_roster_commits.py tests/test_external_joins.py \
	tests/test_roles.py
test-pgbouncer: $(STAMP)
	CATBIRD_TEST_PGBOUNCER=1 $(BIN)/pytest -q $(PGBOUNCER_TESTS)

# The long variants of the proof harness: the soak (and the model-based test) run many
# more operations and examples than in `make test`.
DEEP_TESTS = tests/test_soak.py tests/test_roster_soak.py $(wildcard tests/test_model.py)
test-deep: $(STAMP)
	CATBIRD_DEEP=1 $(BIN)/pytest -q $(DEEP_TESTS)

# Only the plan tests: each hot statement uses its index on a seeded database.
plan-test: $(STAMP)
	$(BIN)/pytest -q -m plan tests/test_plans.py

# sqlfluff reads .sqlfluff and squawk .squawk.toml: each says why any rule is set aside.
# sqlfluff lints every named statement: the runtime's (sql/), the tools' (sql/tools/), the
# demo's and the plan tests'.
lint: $(STAMP)
	$(BIN)/ruff check catbird_db tests bench examples
	$(BIN)/ruff format --check catbird_db tests bench examples
	$(BIN)/mypy
	$(BIN)/sqlfluff lint sql migrations examples/sql tests/sql
	$(BIN)/squawk migrations/*.sql

# The demo is an example of an application, not part of the library: examples/demo.py.
demo: $(STAMP)
	$(BIN)/python examples/demo.py --database-url '$(DATABASE_URL)'

migrate: $(STAMP)
	DATABASE_URL='$(DATABASE_URL)' $(BIN)/catbird-db migrate

# Fill the (empty) database at DATABASE_URL with data at SCALE, to explain on.
seed: migrate
	DATABASE_URL='$(DATABASE_URL)' $(BIN)/catbird-db seed --scale '$(SCALE)'

check: migrate
	DATABASE_URL='$(DATABASE_URL)' $(BIN)/catbird-db check

# The benchmarks print their tables; bench-docs also writes docs/benchmarks.md, and
# bench-quick is the smoke run CI makes (tiny data, figures not to be read).
bench: $(STAMP)
	$(BIN)/python -m bench

bench-docs: $(STAMP)
	BENCH_WRITE=1 $(BIN)/python -m bench

bench-quick: $(STAMP)
	BENCH_QUICK=1 $(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist *.egg-info
