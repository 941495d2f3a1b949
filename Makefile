# gatewayd: `make demo` runs the plant in a box, `make test` runs every test. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := mosquitto socat
PREFIX ?= /opt/gatewayd
DESTDIR ?=
SYSTEMD_DIR ?= /lib/systemd/system
CONF_DIR ?= /etc/gatewayd

.PHONY: deps venv demo test unit hil bench lint install uninstall clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Debian packages: the MQTT broker for the demo and HIL tests, socat for serial lines on pseudo-terminals.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: deps venv
	$(PY) -m hil_tests.demo

test: deps venv
	$(PY) -m pytest tests hil_tests

unit: venv
	$(PY) -m pytest tests

hil: deps venv
	$(PY) -m pytest hil_tests

bench: deps venv
	$(PY) -m bench

lint: venv
	$(PY) -m ruff check gatewayd drivers rules store hil_tests tests bench

# A self-contained virtual environment under PREFIX, the unit, and an example config.
install:
	$(PYTHON) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/pip install -q .
	install -D -m 0644 systemd/gatewayd.service $(DESTDIR)$(SYSTEMD_DIR)/gatewayd.service
	install -D -m 0644 config.example.yaml $(DESTDIR)$(CONF_DIR)/config.example.yaml

uninstall:
	rm -f $(DESTDIR)$(SYSTEMD_DIR)/gatewayd.service $(DESTDIR)$(CONF_DIR)/config.example.yaml
	rm -rf $(DESTDIR)$(PREFIX)

clean:
	rm -rf .demo build *.egg-info .pytest_cache .hypothesis
