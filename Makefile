# Two commands for a newcomer: `make demo` (main job on the realistic simulated bench) and `make test`.
# Both build the virtual environment first; torch is pinned to the local CPU wheel so that
# pip never pulls a multi-GB CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo demo-ideal demo-student live test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The default bench (configs/bench_sim.yaml): a realistic simulated bench that is not the twin (slmsuite's
# simulators with a real bench's flaws), through its stored calibration (configs/bench_sim/: measured radiometry,
# response, crosstalk, geometry, field); the shipped student made for its system (models/student_fixture) against
# RAAR on four samples; writes runs/demo-*/index.html.
demo: $(STAMP)
	$(BIN)/hil demo

# The same on the ideal twin (configs/bench_ideal.yaml, every imperfection off) with the 64 x 64 student (models/student).
demo-ideal: $(STAMP)
	$(BIN)/hil demo --bench configs/bench_ideal.yaml

# Live imaging on the ideal twin with a drifting sample (configs/bench_ideal_live.yaml).
live: $(STAMP)
	$(BIN)/hil live --frames 200

# Train a 64 x 64 student (no teacher, about 7 CPU-minutes) and deploy it on the ideal twin.
demo-student: $(STAMP)
	$(BIN)/hil train configs/train_student_nokd.yaml --out runs/train_student_nokd
	$(BIN)/hil demo --bench configs/bench_ideal.yaml --bundle runs/train_student_nokd/bundle

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check hil drivers calibration tests
	$(BIN)/ruff format --check hil drivers calibration tests

clean:
	rm -rf $(VENV) runs .pytest_cache
