#!/bin/sh
# Tools the test suite drives as real processes: HAProxy (tests/deploy). Idempotent and
# quiet when already present; if it cannot be installed, those tests skip and say why.
set -u
command -v haproxy >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests: haproxy missing and not installable here (needs root and apt-get)" >&2
    exit 0
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null 2>&1; } \
    || echo "tests: haproxy could not be installed; its tests will skip" >&2
# The package starts a system haproxy on the default config; these tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop haproxy >/dev/null 2>&1; fi
pkill -x haproxy >/dev/null 2>&1
exit 0
