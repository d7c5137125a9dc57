# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv/ at the repository root when it is missing and install the pinned set into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Test processes (pytest-xdist): the suite waits on Ray, Prefect and subprocesses for much of its time, so two
# workers keep both cores busy. Whole files go to one worker (module fixtures are computed once). 0 = in-process.
PYTEST_WORKERS ?= 2

# neural-tangents, the reference library, runs as a peer in its own environment (it needs an old JAX);
# the tests compare ntkdist's kernels with it and bench/ times it. No TensorFlow: see bench/neural_tangents_reference.py.
NT_VENV  := .venv-nt
# jaxlib 0.4.26 has wheels for CPython 3.9-3.12 only: on a machine whose python3 is newer, set NT_PYTHON.
NT_PYTHON ?= $(PYTHON)
NT_STAMP := $(NT_VENV)/.installed-stamp
NT_PINS  := jax==0.4.26 jaxlib==0.4.26 numpy==1.26.4 scipy==1.12.0 ml_dtypes==0.5.4 opt_einsum==3.4.0 frozendict==2.5.1

.PHONY: demo test bench bench-kernels bench-peer bench-solvers bench-build bench-io-cost bench-write-cost bench-fused-tile bench-fresh-memory bench-small-calls install clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install whenever the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

$(NT_STAMP):
	$(NT_PYTHON) -m venv $(NT_VENV)
	$(NT_VENV)/bin/python -m pip install --quiet $(NT_PINS)
	$(NT_VENV)/bin/python -m pip install --quiet --no-deps neural-tangents==0.6.5
	touch $(NT_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ntkdist run examples/demo.toml

test: $(STAMP) $(NT_STAMP)
	NTKDIST_NT_PYTHON=$(CURDIR)/$(NT_VENV)/bin/python $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.kernels

# The eigensolver benchmark measures dask's svd_compressed as a peer: the `bench` extra adds dask.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(BENCH_STAMP)

bench-solvers: $(BENCH_STAMP)
	$(BIN)/python -m bench.solvers dense --n 20000 --dim 16 --json bench/results/solvers-dense-20000-16.json

# The build with and without its store (local disk, loopback S3 through moto_server, in the test extra).
bench-build: $(STAMP)
	$(BIN)/python -m bench.build --n 50000 --dim 64 --depth 3 --repeats 3 --json bench/results/build-50000.json

# What the VM's disk costs the computing cores, and what writing one block costs the builder, step by step.
bench-io-cost: $(STAMP)
	$(BIN)/python -m bench.io_cost --seconds 10 --rounds 2 --json bench/results/io-cost.json

bench-write-cost: $(STAMP)
	$(BIN)/python -m bench.write_cost --blocks 28

# One tile of the fused CPU engine, step by step: the GEMM, each depth of fused_tile, the mirror.
bench-fused-tile: $(STAMP)
	$(BIN)/python -m bench.fused_tile --activation erf --depths 1,2,3 --repeat 30

# The fixed cost of a small ntk call (N = 16 … 1000, one thread).
bench-small-calls: $(STAMP)
	$(BIN)/python -m bench.small_calls --repeat 21

# What fresh memory costs against memory already mapped (the reason for the engines' output pool).
bench-fresh-memory: $(STAMP)
	$(BIN)/python -m bench.fresh_memory --repeat 5

# ntkdist and neural-tangents side by side in one run (alternating), the issue's acceptance cases.
bench-kernels: $(STAMP) $(NT_STAMP)
	$(BIN)/python -m bench.kernels --peer --rounds 5 --dtype both --peer-python $(NT_VENV)/bin/python

bench-peer: $(NT_STAMP)
	$(NT_VENV)/bin/python bench/neural_tangents_reference.py speed 8000 64 2 5

clean-venv:
	rm -rf $(VENV) $(NT_VENV)
