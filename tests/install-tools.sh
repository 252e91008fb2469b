#!/bin/sh
# Tools the test suite drives as real processes: HAProxy (tests/deploy), Debian's
# chromium with its driver (the web pages are tested in a real headless browser), swaks (a
# third STARTTLS client beside smtplib and openssl), and Prometheus's promtool and amtool
# (the alert rules in deploy/prometheus are checked and unit-tested with them; the
# packages' daemons are held from starting like every other, see below), and Postfix (a
# real sending MTA at its defaults: tests/support/postfix.py runs a private instance with
# its own configuration and queue directories, never the host's), iproute2 (`ip netns`:
# tests/deploy/test_fleet.py makes its hosts as network namespaces) and curl (README's
# recipes use it).
#
# The host is not ours. Nothing outside the repository is changed unless asked: packages
# are installed only with CI=true (CI sets it; .ci/run relies on it) or
# FLOODGATE_INSTALL_TOOLS=1. Otherwise a missing tool costs one line here and its tests
# skip, naming that variable. No service is ever stopped, restarted or disabled and no
# process is ever ended, whoever started it.
set -u
missing=""
command -v haproxy >/dev/null 2>&1 || missing="$missing haproxy"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium chromium-driver"
command -v swaks >/dev/null 2>&1 || missing="$missing swaks"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v amtool >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
[ -x /usr/sbin/postfix ] || missing="$missing postfix"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
[ -z "$missing" ] && exit 0
if [ "${CI:-}" != true ] && [ "${FLOODGATE_INSTALL_TOOLS:-}" != 1 ]; then
    echo "tests:$missing missing; their tests will skip (FLOODGATE_INSTALL_TOOLS=1 make test installs them)" >&2
    exit 0
fi

# Daemons are held from starting while we install (tools/apt.sh: hold_services).
. "$(dirname "$0")/../tools/apt.sh"

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests:$missing missing and not installable here (needs root and apt-get)" >&2
else
    hold_services tests/install-tools.sh
    # One package set at a time: a chromium that the distribution lacks must not cost HAProxy.
    case "$missing" in *haproxy*)
        apt_install haproxy || echo "tests: haproxy could not be installed; its tests will skip" >&2
    esac
    case "$missing" in *iproute2*|*curl*)
        # shellcheck disable=SC2046
        apt_install $(printf '%s\n' $missing | grep -x -e iproute2 -e curl) \
            || echo "tests: iproute2/curl could not be installed; the fleet and recipe tests will skip" >&2
    esac
    case "$missing" in *swaks*)
        apt_install swaks || echo "tests: swaks could not be installed; its test will skip" >&2
    esac
    case "$missing" in *prometheus*)
        # shellcheck disable=SC2046
        apt_install $(printf '%s\n' $missing | grep '^prometheus') \
            || echo "tests: promtool/amtool could not be installed; their tests will skip" >&2
    esac
    case "$missing" in *postfix*)
        # "No configuration" writes no /etc/postfix/main.cf (as bench/install-postfix.sh):
        # without it Debian's postfix.service (ConditionPathExists) and init script do not
        # start Postfix, now or at boot; the tests start only their private instances.
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        apt_install postfix || echo "tests: postfix could not be installed; its tests will skip" >&2
    esac
    case "$missing" in *chromium*)
        apt_install chromium chromium-driver \
            || echo "tests: chromium could not be installed; its tests will skip" >&2
    esac
    # If a daemon started anyway (say a pre-existing policy-rc.d allows starts), it is the
    # host's now and is left alone: Debian's default haproxy.cfg has only `global` and
    # `defaults`, so it binds no port, and the tests run their own HAProxy on free ports.
fi
# CI must run the HAProxy tests, not skip them quietly.
if [ "${CI:-}" = true ] && ! command -v haproxy >/dev/null 2>&1; then
    echo "tests: CI=true but haproxy is still missing; the deploy tests must run in CI" >&2
    exit 1
fi
if [ "${CI:-}" = true ] && ! command -v ip >/dev/null 2>&1; then
    echo "tests: CI=true but iproute2 is still missing; the fleet test must run in CI" >&2
    exit 1
fi
exit 0
