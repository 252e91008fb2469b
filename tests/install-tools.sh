#!/bin/sh
# Tools the test suite drives as real processes: HAProxy (tests/deploy), and Debian's
# chromium with its driver (the web inbox page is tested in a real headless browser).
# The host is not ours: nothing is installed unless asked (CI=true, as .ci/run is run, or
# FLOODGATE_INSTALL_TOOLS=1), no service is stopped and no process is ended. Without
# HAProxy the tests that need it skip and say how to enable them.
set -u
missing=""
command -v haproxy >/dev/null 2>&1 || missing="$missing haproxy"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium chromium-driver"
[ -z "$missing" ] && exit 0
if [ "${CI:-}" != true ] && [ "${FLOODGATE_INSTALL_TOOLS:-}" != 1 ]; then
    echo "tests:$missing missing; their tests will skip (FLOODGATE_INSTALL_TOOLS=1 make test installs them)" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests:$missing missing and not installable here (needs root and apt-get)" >&2
    exit 0
fi
# Keep the package's maintainer scripts from starting a daemon while we install; the
# policy file is removed on every exit path, and only if we created it.
policy=/usr/sbin/policy-rc.d
created=no
cleanup() { [ "$created" = yes ] && rm -f "$policy"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=yes
fi
# shellcheck disable=SC2086 # $missing is a list of package names
DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1; } \
    || echo "tests:$missing could not be installed; their tests will skip" >&2
# If a daemon started anyway it is the host's now and is left alone: Debian's default
# haproxy.cfg binds no port, and the tests run their own instance on free ports.
exit 0
