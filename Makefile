# Everything runs from a virtualenv this Makefile creates from pinned requirements.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help up test unit lint services load peak-hour steady bench bench-diagnosis bench-detection bench-scenarios bench-footprint bench-overhead bench-outage clean

help:
	@echo "make up        the whole lab in Docker, healthy, then what to open and where the passwords are"
	@echo "make test      lint + every test (creates $(VENV) on first use)"
	@echo "make unit      the in-process tests only (seconds): no services, Prometheus, Locust or other processes"
	@echo "make services  the four shop services natively on 127.0.0.1:8081-8084, in the foreground"
	@echo "make load      headless load against the shop on 127.0.0.1:8081-8084 (native or compose), reports/load-*/"
	@echo "               SHAPE=PeakHourShape (default), Steady or Spike; LOCUST_ARGS for more, e.g. \"-u 20 -t 10m\""
	@echo "make peak-hour the compose lab's Locust (:8089) runs PeakHourShape now; make steady goes back"
	@echo "make bench     the native shop's capacity and Locust's CPU per request vs bench/baseline.json (minutes)"
	@echo "make bench-diagnosis  shoplab diagnose's accuracy and speed on every drill, under traffic (about 30 min)"
	@echo "make bench-detection  time to alert and who is paged for every drill, then a healthy peak hour (about 70 min)"
	@echo "make bench-scenarios  every game day (bad release, canary, missing index, lock contention) with timings (about 20 min)"
	@echo "make bench-footprint  every lab process's memory at idle, peak hour and Spike vs compose's limits, and its stop time (12 min)"
	@echo "make bench-overhead   what traces and logs cost the shop (CPU, latency, memory, bytes) vs a dark shop (about 35 min)"
	@echo "make bench-outage     Tempo away for a minute under load: the shop's memory, queue and counted loss every 5 s (3 min)"
	@echo "make clean     remove $(VENV) and the native services' data"

# Nothing to edit first: compose's lab-init generates the secrets (a value in .env wins). The welcome comes from
# the same script, in the same image, so it needs nothing on this machine but Docker.
up:
	docker compose up -d --wait
	@docker compose run --rm --no-deps lab-init welcome

# The project itself is installed editable: apps/ on the path for tests and benchmarks, and .venv/bin/shoplab.
$(BIN)/.installed: apps/requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# Grafana's LogQL/TraceQL grammars (npm), for the dashboard query tests.
GRAMMARS := tests/grammar/node_modules/.installed
$(GRAMMARS): tests/grammar/package.json tests/grammar/package-lock.json
	npm ci --prefix tests/grammar --no-audit --no-fund --loglevel=error
	touch $@

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint $(GRAMMARS)
	$(BIN)/pytest

unit: $(BIN)/.installed
	$(BIN)/pytest -m "not integration"

services: $(BIN)/.installed
	$(BIN)/python -m shoplib.supervisor

SHAPE ?= PeakHourShape
LOCUST_UI ?= http://127.0.0.1:8089

load: $(BIN)/.installed
	@dir=reports/load-$$(date +%Y%m%d-%H%M%S) && mkdir -p $$dir && echo "reports in $$dir/" && \
	$(BIN)/locust -f locustfiles/locustfile.py --headless --only-summary --shape $(SHAPE) $(LOCUST_ARGS) \
		--csv $$dir/load --html $$dir/load.html

peak-hour:
	curl -fsS -X POST $(LOCUST_UI)/stop > /dev/null
	curl -fsS -X POST $(LOCUST_UI)/swarm -d shape_class=PeakHourShape

steady:
	curl -fsS -X POST $(LOCUST_UI)/stop > /dev/null
	curl -fsS -X POST $(LOCUST_UI)/swarm -d shape_class=Steady -d user_count=10 -d spawn_rate=1

bench: $(BIN)/.installed
	$(BIN)/python bench/load_capacity.py

bench-diagnosis: $(BIN)/.installed
	$(BIN)/python bench/diagnosis.py $(BENCH_ARGS)

bench-detection: $(BIN)/.installed
	$(BIN)/python bench/detection.py $(BENCH_ARGS)

bench-scenarios: $(BIN)/.installed
	$(BIN)/python bench/scenarios.py $(BENCH_ARGS)

bench-footprint: $(BIN)/.installed
	$(BIN)/python bench/footprint.py $(BENCH_ARGS)

bench-overhead: $(BIN)/.installed
	$(BIN)/python bench/overhead.py $(BENCH_ARGS)

bench-outage: $(BIN)/.installed
	$(BIN)/python bench/outage.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data reports tests/grammar/node_modules
