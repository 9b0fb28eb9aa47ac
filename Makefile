# The README's two commands. Each sets up a local virtualenv (.venv) on first use.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 2

# Debian packages the tests need: the emulated arm64 target (qemu-user, debootstrap), the
# op library's builds (cross compiler, gemmlowp header).
TEST_DEBIAN_PACKAGES := qemu-user debootstrap g++-aarch64-linux-gnu libgemmlowp-dev

.PHONY: demo test clean test-debian-packages

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m xnor_keras.demo

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
