# Two commands set everything up: `make demo` and `make test`; `make recipe` trains a policy that
# succeeds, `make insertion` one for the insertion task, `make diffusion` a Diffusion Policy, `make bench`
# runs the benchmarks; `make so101` one simulated SO-101 arm.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
export MUJOCO_GL ?= egl

.PHONY: demo recipe insertion diffusion so101 test test-slow bench

# torch is installed first, then named again beside requirements.txt so pip never replaces it
$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements.txt $(TORCH)
	touch $@

# The suite on up to 4 cores side by side, then the tests that drive emulated servo buses on time, alone
test: $(VENV)/.installed
	$(PY) -m pytest -q -n auto --maxprocesses 4 -m "not slow and not serial"
	$(PY) -m pytest -q -m "serial and not slow"

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

# The benchmark suite, one JSON object on stdout (BENCH_ARGS: e.g. --only train_step, or --smoke)
bench: $(VENV)/.installed
	$(PY) -m bench $(BENCH_ARGS)

# Scripted demonstrations of the transfer cube in ./demo/ (videos and joint plots of two), a small
# ACT trained on them and a few rollouts, in about 10 minutes on a 2-core CPU (demo.py)
demo: $(VENV)/.installed
	$(PY) demo.py

# The CPU recipe in ./recipe/: 50 demonstrations, 2,400 training steps and 50 rollouts, in about 25
# minutes on a 2-core CPU (demo.py)
recipe: $(VENV)/.installed
	$(PY) demo.py --recipe cpu --out recipe

# The insertion recipe in ./insertion/: 50 demonstrations at 120x160, 6,000 training steps and 50
# rollouts played chunk by chunk, in about 50 minutes on a 2-core CPU (demo.py)
insertion: $(VENV)/.installed
	$(PY) demo.py --recipe insertion --out insertion

# The Diffusion recipe in ./diffusion/: the CPU recipe's 50 demonstrations, a Diffusion Policy trained
# for 4,000 steps and 50 rollouts, in about 45 minutes on a 2-core CPU (demo.py)
diffusion: $(VENV)/.installed
	$(PY) demo.py --recipe diffusion --out diffusion

# One simulated SO-101 arm in ./so101/: 200 scripted pick-and-place demonstrations at 96x128 (front and
# wrist cameras), the CPU recipe's ACT trained for 2,400 steps and 50 rollouts playing 25 actions of each
# chunk, in about 25 minutes (demo.py)
so101: $(VENV)/.installed
	$(PY) demo.py --recipe so101 --out so101
