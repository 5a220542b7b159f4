# lazyfly: `make run` and `make test` set up everything they need on a fresh Debian 12 machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := fuse3 libfuse3-dev pkg-config containerd runc docker-registry skopeo umoci \
	stargz-snapshotter debootstrap busybox-static zstd curl iproute2
STAMP := $(VENV)/.installed

.PHONY: install system-packages run test test-unit lint bench clean proto

install: system-packages $(STAMP)

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/python -m lazyfly.demo

test: install lint
	$(BIN)/pytest -q -p no:cacheprovider

test-unit: install
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/build.py
	$(BIN)/python bench/fuse_read.py
	$(BIN)/python bench/coldstart.py
	$(BIN)/python bench/p2p.py

# containerd's snapshots v1 messages, from the proto we own (the generated file is committed; the
# gRPC binding is made from its descriptor by lazyfly.rpc.binding).
proto: install
	rm -rf build/proto && mkdir -p build/proto
	$(BIN)/python -m grpc_tools.protoc --proto_path=lazyfly/snapshotter/proto=snapshotter/proto \
		--python_out=build/proto lazyfly/snapshotter/proto/snapshots.proto
	cp build/proto/lazyfly/snapshotter/proto/snapshots_pb2.py snapshotter/proto/

clean:
	rm -rf $(VENV) build *.egg-info
