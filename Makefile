# gatewayd: `make demo` runs the plant in a box, `make test` runs every test. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := mosquitto socat systemd faketime nodejs npm chromium chromium-driver postgresql gcc
NODE_SIM := hil_tests/sim/nodeopcua
PREFIX ?= /opt/gatewayd
DESTDIR ?=
SYSTEMD_DIR ?= /lib/systemd/system
CONF_DIR ?= /etc/gatewayd
SYSUSERS_DIR ?= /usr/lib/sysusers.d
TMPFILES_DIR ?= /usr/lib/tmpfiles.d
DOC_DIR ?= $(PREFIX)/share/doc/gatewayd
STAGE = $(DESTDIR)$(PREFIX).new

.PHONY: deps apt-deps venv demo test unit hil bench soak lint install uninstall clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The rule kernels compiled ahead of time (rules/kernels/native*.so): rebuilt when their sources changed
# since (about 10 s), otherwise nothing to do. Without it the daemon compiles them with numba at run time.
venv: $(VENV)/.installed
	$(PY) -m rules.kernels.build --if-stale

# Debian packages: gcc for the rule kernels' ahead-of-time build (rules/kernels/build.py), the MQTT broker
# for the demo and HIL tests, socat for serial lines on pseudo-terminals, faketime (libfaketime) to step the daemon's wall clock in hil_tests/test_clock.py, PostgreSQL for gatewayd-ingest
# (its tests start their own cluster, hil_tests/postgres.py), Node.js and npm for
# the node-opcua simulator (a second OPC UA stack), whose packages npm installs as its lock file pins them,
# Chromium and its WebDriver for the console's browser test (hil_tests/test_console.py; nothing is downloaded
# at run time).
# A package counts as present when dpkg has it or its command exists (a Node.js from elsewhere will do).
deps: $(NODE_SIM)/node_modules/.package-lock.json

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || command -v $$p >/dev/null 2>&1 \
	  || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# npm writes node_modules/.package-lock.json on every install: newer than the lock file means up to date
$(NODE_SIM)/node_modules/.package-lock.json: $(NODE_SIM)/package-lock.json $(NODE_SIM)/package.json | apt-deps
	cd $(NODE_SIM) && npm ci --no-audit --no-fund --loglevel=error

demo: deps venv
	$(PY) -m hil_tests.demo

# Two tests at a time (pytest-xdist) on the machine's cores, then the `solo` ones alone: they judge the daemon
# by its timing (a crash loop, a backfill, a flood), which another test's load would blur.
test: deps venv
	$(PY) -m pytest -n 2 -m "not solo" tests hil_tests --durations=15
	$(PY) -m pytest -m solo hil_tests --durations=5

unit: venv
	$(PY) -m pytest tests

hil: deps venv
	$(PY) -m pytest hil_tests

bench: deps venv
	$(PY) -m bench

# The fault-injection suite at full size (100 kills, 1,000,000-sample outage, 100,000 fuzzed Modbus frames,
# 30 minutes at 10,000 tags, ...): figures as JSON lines.
soak: deps venv
	GATEWAYD_FAULT_SIZE=full $(PY) -m pytest -s -p no:cacheprovider -o timeout=7200 hil_tests/test_faults.py \
	  hil_tests/test_hostile.py hil_tests/test_soak.py

lint: venv
	$(PY) -m ruff check core gatewayd drivers rules store hil_tests tests bench

# A self-contained virtual environment under PREFIX, the unit (paths rewritten to PREFIX and CONF_DIR),
# sysusers and tmpfiles files, docs and an example config. The environment is built beside the old one
# (PREFIX.new), its paths rewritten from the staging place to PREFIX, and swapped in, so an upgrade never
# leaves a half-installed PREFIX. Nothing under CONF_DIR but the example is written, and the state and
# cache directories are never touched: an upgrade keeps the config, the key and the unsent data.
# Every mode is set explicitly, whatever the caller's umask (0002 would leave files group-writable, 0077
# unreadable to the service): the program tree 0755/0644, unit, sysusers, tmpfiles and docs 0644, CONF_DIR
# 0750; nothing written is ever group- or world-writable, not even while being built (umask 022 or 077).
install:
	rm -rf $(STAGE)
	umask 022 && $(PYTHON) -m venv $(STAGE)
	umask 022 && $(STAGE)/bin/python -m pip install -q --no-compile .
	umask 022 && $(STAGE)/bin/python -P -m rules.kernels.build  # -P: the installed package, not ./rules
	grep -rlIZ -F '$(STAGE)' $(STAGE)/bin $(STAGE)/pyvenv.cfg | xargs -0 -r sed -i 's|$(STAGE)|$(PREFIX)|g'
	find $(STAGE) -name __pycache__ -prune -exec rm -rf {} +
	umask 022 && $(STAGE)/bin/python -m compileall -q -s $(STAGE) -p $(PREFIX) $(STAGE)/lib
	chmod -R u=rwX,go=rX $(STAGE)
	rm -rf $(DESTDIR)$(PREFIX).old
	if [ -e $(DESTDIR)$(PREFIX) ]; then mv $(DESTDIR)$(PREFIX) $(DESTDIR)$(PREFIX).old; fi
	mv $(STAGE) $(DESTDIR)$(PREFIX)
	rm -rf $(DESTDIR)$(PREFIX).old
	install -d -m 0755 $(DESTDIR)$(SYSTEMD_DIR) $(DESTDIR)$(SYSUSERS_DIR) $(DESTDIR)$(TMPFILES_DIR) $(DESTDIR)$(DOC_DIR)
	umask 077 && sed -e 's|/opt/gatewayd|$(PREFIX)|g' -e 's|/etc/gatewayd|$(CONF_DIR)|g' systemd/gatewayd.service \
	  > $(DESTDIR)$(SYSTEMD_DIR)/gatewayd.service && chmod 0644 $(DESTDIR)$(SYSTEMD_DIR)/gatewayd.service
	umask 077 && sed -e 's|/etc/gatewayd|$(CONF_DIR)|g' systemd/gatewayd.tmpfiles > $(DESTDIR)$(TMPFILES_DIR)/gatewayd.conf \
	  && chmod 0644 $(DESTDIR)$(TMPFILES_DIR)/gatewayd.conf
	install -m 0644 systemd/gatewayd.sysusers $(DESTDIR)$(SYSUSERS_DIR)/gatewayd.conf
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOC_DIR)/
	install -d -m 0750 $(DESTDIR)$(CONF_DIR)
	install -m 0644 systemd/gatewayd.example.yaml $(DESTDIR)$(CONF_DIR)/config.example.yaml
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
	  systemd-sysusers $(SYSUSERS_DIR)/gatewayd.conf && systemd-tmpfiles --create $(TMPFILES_DIR)/gatewayd.conf; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	  echo "installed; after an upgrade: systemctl restart gatewayd"; \
	fi

# Removes the program, the unit and the example; keeps CONF_DIR's config and key and the state directory
# (the unsent data), which only an operator should delete.
uninstall:
	rm -f $(DESTDIR)$(SYSTEMD_DIR)/gatewayd.service $(DESTDIR)$(SYSUSERS_DIR)/gatewayd.conf \
	  $(DESTDIR)$(TMPFILES_DIR)/gatewayd.conf $(DESTDIR)$(CONF_DIR)/config.example.yaml
	rm -rf $(DESTDIR)$(PREFIX) $(DESTDIR)$(PREFIX).new $(DESTDIR)$(PREFIX).old
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

clean:
	rm -rf .demo build *.egg-info .pytest_cache .hypothesis rules/kernels/native.*
