# Two commands set everything up: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
export MUJOCO_GL ?= egl

.PHONY: demo test test-slow bench

# torch is installed first, then named again beside requirements.txt so pip never replaces it
$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements.txt $(TORCH)
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow
