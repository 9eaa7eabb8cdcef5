# voxgate — `make serve` and `make test` do every install step themselves.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := ffmpeg sox espeak-ng postgresql chromium libportaudio2 redis-server nginx
export VOXGATE_MODEL_DIR ?= $(HOME)/.cache/voxgate/models

.PHONY: install system-deps serve test lint bench models clean

install: $(STAMP)

system-deps:
	@missing=""; for p in ffmpeg sox espeak-ng chromium redis-server; do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing="$$missing nginx"; \
	[ -n "$$(ls /usr/lib/*/libportaudio.so.2 /usr/lib/libportaudio.so.2 2>/dev/null)" ] || missing="$$missing libportaudio2"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(MAKE) system-deps
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/voxgate assemble
	touch $(STAMP)

models: install
	$(BIN)/voxgate models

serve: install
	$(BIN)/voxgate serve

test: install
	$(BIN)/pytest -q -x --durations=15 tests

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/batch.py
	@for b in jobs streaming quality scale; do [ ! -f bench/$$b.py ] || $(BIN)/python bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
