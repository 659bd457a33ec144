# Two commands do everything on a fresh machine:
#   make reproduce   installs kdad into .venv (+ Debian's Fashion-MNIST when apt is usable) and runs the default benchmark
#   make test        installs kdad with its test extra into .venv and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CORES  ?= all

.PHONY: install data reproduce test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

# Debian ships the full Fashion-MNIST; kdad reads it from /usr/share/datasets/fashion-mnist.
data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: found Debian's copy"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	else \
	  echo "Fashion-MNIST is not installed: run 'sudo apt-get install dataset-fashion-mnist', or go online (kdad downloads it),"; \
	  echo "or put the four idx .gz files in resources/data/fashion_mnist/"; \
	fi

reproduce: install data
	$(BIN)/snakemake --cores $(CORES)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf work .snakemake
