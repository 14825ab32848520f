# ML Ledger: the two set-up commands are `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install run migrate test test-fast lint bench clean browser softhsm sandbox device-wheels

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/mlledger migrate

run: install sandbox
	$(BIN)/mlledger migrate
	$(BIN)/mlledger serve --host $(HOST) --port $(PORT)

# The console's browser test drives Debian's chromium (never a downloaded browser);
# as root it is installed when missing, otherwise the test says why it skips.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update && apt-get install -y --no-install-recommends chromium)

# The PKCS#11 tests keep the ledger key in Debian's SoftHSM2 (softhsm2-util) and make its keys with
# pkcs11-tool (opensc); as root they are installed when missing, otherwise the tests say why they skip.
softhsm:
	@(command -v softhsm2-util && command -v pkcs11-tool) >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update && apt-get install -y --no-install-recommends softhsm2 opensc)

# Python pipelines run their code in a bubblewrap sandbox (service/runners/sandbox.py); as root
# Debian's bubblewrap is installed when missing, otherwise python runs fail saying it is needed.
sandbox:
	@command -v bwrap >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update && apt-get install -y --no-install-recommends bubblewrap)

test: install browser softhsm sandbox
	$(BIN)/python -m pytest

test-fast: install softhsm sandbox
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/append.py
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/merkle.py

# bench/gpu_check.py on a GPU machine whose Python has PyTorch (with CUDA), NumPy, SciPy, scikit-learn
# and httpx but none of this project's other packages, and no network: their wheels, at the versions
# installed here, for that machine's Python (DEVICE_PYTHON), in .whl/ (ignored; about 28 MB), to carry
# there and install with `pip install --no-index --no-deps --target /tmp/site .whl/*.whl`. Ray is left
# out: its wheel alone (79 MB) is more than such a machine is sent at once.
DEVICE_PYTHON ?= 3.12
DEVICE_WHEELS := eventsourcing rfc8785 orjson cryptography pynacl cffi pycparser fastapi starlette uvicorn \
	pydantic pydantic-core pydantic-settings python-dotenv typing-inspection annotated-types sqlalchemy \
	greenlet alembic mako python-multipart fpdf2 defusedxml python-pkcs11 skops shap slicer cloudpickle \
	psycopg psycopg-binary psycopg-pool
device-wheels: install
	rm -rf .whl && mkdir -p .whl
	for package in $(DEVICE_WHEELS); do \
		version=$$($(BIN)/pip show $$package | sed -n 's/^Version: //p'); \
		$(BIN)/pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
			--python-version $(DEVICE_PYTHON) --implementation cp --platform manylinux_2_28_x86_64 \
			--platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 --platform manylinux_2_17_x86_64 \
			--platform manylinux2014_x86_64 -d .whl "$$package==$$version" || exit 1; \
	done
	du -sh .whl

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .whl
