# The README's two commands. Each sets up a local virtualenv (.venv) on first use.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 3

# Debian packages the tests need: the emulated arm64 target (qemu-user, debootstrap), the
# op library's builds (cross compiler, gemmlowp header), real images (Fashion-MNIST).
TEST_DEBIAN_PACKAGES := qemu-user debootstrap g++-aarch64-linux-gnu libgemmlowp-dev dataset-fashion-mnist llvm
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test clean test-debian-packages fashion-mnist

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

# Installs what is missing when it can (root and apt-get), else names the command and stops.
test-debian-packages:
	@missing=$$(for p in $(TEST_DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages: "$$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "error: the tests need Debian packages; run: sudo apt-get install "$$missing; exit 2; \
	  fi; \
	fi

test: $(STAMP) test-debian-packages
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) demo_out .pytest_cache *.egg-info
