# The two commands README.md gives: `make demo` (set up .venv, run the demo) and
# `make test` (set up .venv, run the test suite). .ci/run calls `make test`.
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/ganglion demo

test: setup
	bash scripts/setup_interop.sh || echo "no .venv-interop: the Triton/KServe interop tests will skip"
	.venv/bin/python -m pytest -q -p no:cacheprovider

bench: setup
	.venv/bin/python -m pip install -q --no-deps "spikingjelly==2.0.0" loguru  # peer of the throughput run
	.venv/bin/python benchmarks/spiking_conversion.py
	.venv/bin/python benchmarks/spiking_throughput.py
