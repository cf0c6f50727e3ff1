# Two commands for a newcomer: `make demo` (main job on the simulated bench) and `make test`.
# Both build the virtual environment first; torch is pinned to the local CPU wheel so that
# pip never pulls a multi-GB CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo demo-bench demo-student live test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The shipped student (models/student) against RAAR on four samples; writes runs/demo-*/index.html.
demo: $(STAMP)
	$(BIN)/hil demo

# The fixture student on a realistic bench that is not the twin (slmsuite's simulators with a real bench's
# flaws), through its stored calibration (configs/realistic/: measured radiometry, response, crosstalk, geometry, field).
demo-bench: $(STAMP)
	$(BIN)/hil demo --bench configs/realistic/bench.yaml --bundle models/student_fixture

# Live imaging on the simulated bench with a drifting sample (configs/bench_sim_live.yaml).
live: $(STAMP)
	$(BIN)/hil live --frames 200

# Train a student (no teacher, about 7 CPU-minutes) and deploy it on the simulated bench.
demo-student: $(STAMP)
	$(BIN)/hil train configs/train_student_nokd.yaml --out runs/train_student_nokd
	$(BIN)/hil demo --bundle runs/train_student_nokd/bundle

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check hil drivers calibration tests
	$(BIN)/ruff format --check hil drivers calibration tests

clean:
	rm -rf $(VENV) runs .pytest_cache
