# servicehub: make test-fast while iterating, make test before you push (CI runs .ci/run).
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTEST  := $(VENV)/bin/pytest

.PHONY: venv lint unit integration cluster-test test-fast test prerequisites images oidc-provider molecule molecule-cluster security molecule-debian13 demo demo-down \
	run-local bench clean configure

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check servicehub tests bench examples molecule
	$(VENV)/bin/ruff format --check servicehub tests bench examples molecule
	$(VENV)/bin/mypy
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH yamllint --strict .
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH ansible-lint
	$(PY) scripts/variable-reference.py --check
	bash -n scripts/*.sh .ci/run

unit: venv
	$(PYTEST) -q tests/unit

# Answer questions, get inventory, group_vars/hub/main.yml and the Vault file (docs/configure.md).
configure: venv
	$(VENV)/bin/servicehub-configure

# Needs a running Docker Engine and the test images: `make prerequisites` provides both.
# ensure-docker.sh (quick when the engine runs) also remounts cgroup controllers that a Molecule
# scenario's nested systemd may have unmounted: without them Docker's stats API returns nothing.
# The wizard's terminal tests talk to the test OpenID provider: it needs its node modules.
integration: venv oidc-provider
	scripts/ensure-docker.sh
	$(PYTEST) -q -m "integration and not cluster" tests/integration

# The Swarm backend on a real swarm: a hub and two workers as systemd containers, each with its
# own Docker Engine (docs/cluster.md). Not in `integration`: forming the swarm and loading the
# image into the workers takes most of its minute; `make test` runs it on its own.
cluster-test: venv
	scripts/ensure-docker.sh
	docker build --pull=false -q -t servicehub-test/swarm-node:12 molecule/images/swarm-node >/dev/null
	$(PYTEST) -q -s -m cluster tests/integration/test_swarm.py

test-fast: lint unit integration

# Everything CI needs on a clean Debian machine: packages, a running engine, local images.
prerequisites:
	scripts/install-prerequisites.sh
	scripts/ensure-docker.sh
	scripts/build-test-images.sh

images:
	scripts/build-test-images.sh

# The test/demo OpenID Connect provider (pure JavaScript, pinned by package-lock.json).
oidc-provider: dev/oidc-provider/node_modules/.package-lock.json
dev/oidc-provider/node_modules/.package-lock.json: dev/oidc-provider/package-lock.json
	cd dev/oidc-provider && npm ci --no-audit --no-fund --silent

# The same scenario on Debian 13 (not in make test: it would double the run time of CI).
molecule-debian13: venv oidc-provider
	DEBIAN_RELEASE=13 scripts/build-test-images.sh
	-docker volume rm servicehub-molecule-docker >/dev/null 2>&1
	SERVICEHUB_DEBIAN_RELEASE=13 $(MOLECULE) test

# The whole stack on this machine: a systemd container provisioned by site.yml, self-signed TLS,
# a local OpenID Connect provider with demo users, the example app.
MOLECULE := PATH=$(CURDIR)/$(VENV)/bin:$$PATH molecule
# molecule test, with the reason of a failure repeated at the end of the output.
MOLECULE_TEST := PATH=$(CURDIR)/$(VENV)/bin:$$PATH scripts/molecule-test.sh
demo: prerequisites venv oidc-provider
	$(MOLECULE) converge -s demo
	@echo
	@echo "servicehub demo: open https://localhost:8443/ (self-signed certificate: accept it)"
	@echo "log in as alice / alice-password or bob / bob-password (eve / eve-password is refused)"
	@echo "remove it all with: make demo-down"

demo-down: venv
	$(MOLECULE) destroy -s demo
	-docker volume rm servicehub-demo-docker >/dev/null 2>&1

# The full-stack scenario: site.yml on a systemd container, with the provider and Pebble; its
# verify step starts with the attack suite (docs/attacks.md).
# The inner engine's volume is removed first so every run starts from a bare host.
molecule: venv oidc-provider
	-docker volume rm servicehub-molecule-docker >/dev/null 2>&1
	$(MOLECULE_TEST) default

# A hub and two workers forming a Docker Swarm with site.yml (docs/cluster.md): converge,
# idempotence, then logins spread over the workers and a session's reach from a worker. Its
# own target, run by .ci/run after `make test`, which it would take past 45 minutes.
CLUSTER_VOLUMES := servicehub-cluster-hub-docker servicehub-cluster-hub-bricks \
	servicehub-cluster-w1-docker servicehub-cluster-w2-docker
molecule-cluster: venv oidc-provider
	scripts/ensure-docker.sh
	docker build --pull=false -q -t servicehub-test/swarm-node:12 molecule/images/swarm-node >/dev/null
	@# An interrupted run leaves its machines: their engines' volumes would keep the old swarm.
	-docker rm -f cluster-hub cluster-w1 cluster-w2 >/dev/null 2>&1
	-docker volume rm $(CLUSTER_VOLUMES) >/dev/null 2>&1
	$(MOLECULE_TEST) cluster

# The whole attack suite alone: container attacks on the real daemon, then the full-stack scenario.
security: prerequisites venv oidc-provider
	$(PYTEST) -q tests/integration/test_attacks_container.py
	$(MAKE) molecule

test: prerequisites venv oidc-provider lint
	$(PYTEST) -q --durations=15 -m "not cluster" tests
	$(MAKE) cluster-test
	$(MAKE) molecule

run-local: venv
	$(PY) -m tests.harness

bench: venv
	$(PY) bench/spawn.py
	$(PY) bench/proxy.py

clean:
	rm -rf $(VENV) .work .pytest_cache .mypy_cache .ruff_cache
