# Everything runs inside a local virtualenv that these targets create on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The demo: a search of the embedded digits space (40 architectures), then its report. Run it again
# and it resumes the stored study instead of refusing to overwrite it.
demo: $(STAMP)
	$(VENV)/bin/nasconv search search_spaces/digits.yaml $$([ -e results/digits/study.db ] && echo --resume)
	$(VENV)/bin/nasconv report results/digits

test: $(STAMP)
	$(VENV)/bin/ruff check nasconv tests benchmarks
	$(VENV)/bin/mypy nasconv
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/ops.py
	$(PY) benchmarks/search_quality.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/search_overhead.py
	$(PY) benchmarks/proxy.py

clean:
	rm -rf $(VENV) .pytest_cache
