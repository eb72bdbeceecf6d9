# Two commands on a fresh machine: `make run` (start the daemon) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CONFIG ?= config.yaml

.PHONY: setup setup-ray run once test bench bench-quick bench-ray bench-print bench-gpu demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Pinned: these two install from this machine's disk; a looser pin pulls a multi-GB download.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,bench]'
	rm -f $(VENV)/.installed-* && touch $@

run: setup
	$(VENV)/bin/style-pipeline run --config $(CONFIG)

once: setup
	$(VENV)/bin/style-pipeline once --config $(CONFIG)

# -n: pytest-xdist with one worker more than the cores: most tests wait on daemons in subprocesses, so two
# workers left a third of the 2-core box idle (641 tests, quiet: -n 2 9 min 24 s at 1.29 cores busy; -n 3 7 min 57 s);
# --dist loadgroup keeps tests marked xdist_group (the Ray ones) on one worker.
WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: setup
	$(PY) -m pytest -q -n $(WORKERS) --dist loadgroup

# executor: ray (issue 6): the optional extra, then 1 and 2 local actors against the local executor.
setup-ray: setup
	$(PY) -m pip install -q -e '.[ray]'

bench-ray: setup-ray
	$(PY) bench/bench_ray.py

demo: setup
	$(PY) bench/make_pictures.py

bench: setup
	$(PY) bench/bench.py

bench-quick: setup
	$(PY) bench/bench.py --quick

# issue 13: a step's cost next to the bare and the loss pass, on whatever device is here (ARGS="--sizes 64" to smoke);
# then the daemon on a queued batch of 24 photos per executor layout (bench/pool.py: 512 and 1024 px on CUDA).
bench-gpu: setup
	$(PY) bench/gpu.py $(ARGS)
	$(PY) bench/pool.py

# issue 14: large prints. On a GPU: 2048/4096/8192 px in 20 GiB of an emulated 24 GB card; on a CPU e.g.
# `make bench-print DEVICE=cpu SIZES=2048 MAXMEM=4GiB STEPS=10`.
DEVICE ?= cuda
SIZES  ?= 2048 4096 8192
MAXMEM ?= 20GiB
STEPS  ?= 150
bench-print: setup
	$(PY) -m bench.print --device $(DEVICE) --sizes $(SIZES) --max-memory $(MAXMEM) --steps $(STEPS) --single

clean:
	rm -rf $(VENV) build *.egg-info

# issues 13 and 14 on a lent GPU (README, "When a GPU is lent"). Once, in the checkout the `run` tool sends:
# what the GPU machine lacks, into .device/ (ignored by git; carry [".device"]).
.PHONY: device-payload device-dry
device-payload:
	bash bench/device_payload.sh

# The same one script, every stage at tiny sizes on this CPU (7-8 minutes on the shared 2-core box): $(DRY_OUT)
# then holds what $OUT will bring back from the GPU.
DRY_OUT ?= /tmp/device-dry
device-dry: device-payload
	rm -rf $(DRY_OUT) && OUT=$(DRY_OUT) DEVICE_DRY=1 $(PY) bench/device_run.py
