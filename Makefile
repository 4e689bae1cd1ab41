# edgekd: `make demo` runs the default job, `make test` the default test suite. Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgekd-installed

.PHONY: demo test test-matrix test-slow test-arm64 bench agent clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch would pull several GB of CUDA wheels
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgekd run configs/mnist5k.toml --out runs/mnist5k

test: $(STAMP)
	$(PY) -m pytest

# every seed 0-4, plainly and with torch on other CPU kernels (stand-in for another machine);
# the pytest summary line is picked by its counts (a library may log after it)
SWITCHES := ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE
test-matrix: $(STAMP)
	@fail=0; for seed in 0 1 2 3 4; do for sw in "" "$(SWITCHES)"; do \
	  line=$$(env EDGEKD_TEST_SEED=$$seed $$sw $(PY) -m pytest -q -p no:warnings 2>&1 | grep -E '[0-9]+ (passed|failed|errors?)' | tail -1); \
	  echo "seed $$seed $${sw:-plain}: $${line:-no pytest summary}"; case "$${line:-failed}" in *failed*|*error*) fail=1;; esac; \
	done; done; exit $$fail

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# an emulated Raspberry Pi (Debian bookworm arm64 under qemu-user-static), built once into .cache/ (needs root)
ARM64_ROOT ?= .cache/arm64-root
test-arm64: $(STAMP)
	mkdir -p $(dir $(abspath $(ARM64_ROOT)))
	PYTHON=$(PY) tests/arm64/make_root.sh $(abspath $(ARM64_ROOT))
	EDGEKD_ARM64_ROOT=$(abspath $(ARM64_ROOT)) $(PY) -m pytest -m arm64 -s tests/arm64

bench: $(STAMP)
	$(PY) benchmarks/distill_seeds.py configs/mnist5k.toml --seeds 0 1 2

# the benchmark agent as one file, to copy to a device: python3 agent.pyz MODEL|BUNDLE.zip -o results.json
agent: $(STAMP)
	$(PY) -m edgekd.bench.agent.pyz dist/agent.pyz

clean:
	rm -rf runs dist .pytest_cache
