#!/bin/sh
# Postfix's smtp-source and smtp-sink, the reference load generator and ceiling for
# `make bench`. Installed only when asked (CI=true or FLOODGATE_INSTALL_TOOLS=1): the host
# is not ours. Without them the bench reports the throughput suite as skipped. Never
# leaves a Postfix daemon running, never stops a service, never ends a process.
set -u
if [ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ]; then
    exit 0
fi
if [ "${CI:-}" != true ] && [ "${FLOODGATE_INSTALL_TOOLS:-}" != 1 ]; then
    echo "bench: smtp-source/smtp-sink missing; throughput will be skipped (FLOODGATE_INSTALL_TOOLS=1 make bench installs postfix)" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench: cannot install postfix here (needs root and apt-get); throughput will be skipped" >&2
    exit 0
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
# Keep the package's maintainer scripts from starting a daemon on port 25; the policy file
# is removed on every exit path (a stale one blocks every service start on the host).
policy=/usr/sbin/policy-rc.d
created=no
cleanup() { [ "$created" = yes ] && rm -f "$policy"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=yes
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null 2>&1; } \
    || echo "bench: postfix could not be installed; throughput will be skipped" >&2
exit 0
