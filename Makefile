# The README's two commands. Each sets up a local virtualenv (.venv) on first use.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 3

FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test clean fashion-mnist

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP) fashion-mnist
	$(VENV)/bin/python -m xnor_keras.demo

# The demo's real images: Debian's Fashion-MNIST, installed when missing if we can (root, apt).
fashion-mnist:
	@if [ ! -e $(FASHION_MNIST) ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	        echo "installing Debian's dataset-fashion-mnist (the demo's images) ..."; \
	        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	    else \
	        echo "The demo trains on Fashion-MNIST; install it with:  sudo apt-get install dataset-fashion-mnist"; \
	        exit 1; \
	    fi; \
	fi

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) demo_out .pytest_cache *.egg-info
