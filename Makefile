# VMPortal — the two commands: `make run` and `make test` (Debian 12, as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

# Debian packages: the lab (libvirt/QEMU/sshd in namespaces), Redis, NFS-Ganesha,
# the toolchain that builds libvirt-python and the lab's guests.
APT_RUN := libvirt-daemon-system libvirt-clients libvirt-dev qemu-system-x86 qemu-utils \
	openssh-server openssh-client redis-server bindfs cpio iproute2 iptables util-linux \
	nfs-ganesha nfs-ganesha-vfs rpcbind nfs-common busybox-static binutils gcc pkg-config python3-dev python3-venv
APT_TEST := chromium postgresql

.PHONY: run test deps test-deps apt apt-test lab-up lab-down lab-status clean-venv

run: deps
	$(PY) scripts/run.py

# The lab and browser tests and the lab-free tests run side by side (scripts/run_tests.py);
# `make test ARGS="tests/unit -k vm_list"` runs one ordinary pytest with those arguments.
test: test-deps
	VMPORTAL_REQUIRE_LAB=$${VMPORTAL_REQUIRE_LAB:-0} $(PY) scripts/run_tests.py $(ARGS)

deps: apt $(VENV)/.requirements-stamp

test-deps: deps apt-test $(VENV)/.requirements-test-stamp

apt:
	@scripts/apt-ensure $(APT_RUN)

apt-test:
	@scripts/apt-ensure $(APT_TEST)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.requirements-stamp: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.requirements-test-stamp: requirements-test.txt requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

lab-up: deps
	$(PY) -m lab up

lab-down:
	$(PY) -m lab down

lab-status:
	$(PY) -m lab status
