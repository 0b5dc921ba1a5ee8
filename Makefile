# Two commands set everything up: `make demo` and `make test`; `make bench` runs the benchmarks.
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

# The benchmark suite, one JSON object on stdout (BENCH_ARGS: e.g. --only train_step, or --smoke)
bench: $(VENV)/.installed
	$(PY) -m bench $(BENCH_ARGS)

DEMO_DIR := demo
DEMO_TASK := sim_transfer_cube_scripted
DEMO_EPISODES := 2

# Scripted demonstrations of the default task in ./demo/, with their videos and joint plots;
# then a small ACT trained on them for a few minutes and a few evaluation rollouts (demo.py)
demo: $(VENV)/.installed
	$(PY) record_sim_episodes.py --task_name $(DEMO_TASK) --dataset_dir $(DEMO_DIR)/$(DEMO_TASK) \
		--num_episodes $(DEMO_EPISODES) --num_workers 2
	for i in $$(seq 0 $$(($(DEMO_EPISODES) - 1))); do \
		$(PY) visualize_episodes.py --dataset_dir $(DEMO_DIR)/$(DEMO_TASK) --episode_idx $$i || exit 1; \
	done
	$(PY) demo.py --dataset_dir $(DEMO_DIR)/$(DEMO_TASK) --num_episodes $(DEMO_EPISODES) --ckpt_dir $(DEMO_DIR)/ckpt
