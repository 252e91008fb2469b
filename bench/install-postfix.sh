#!/bin/sh
# Postfix's smtp-source and smtp-sink, the reference load generator and ceiling for
# `make bench`.
#
# The host is not ours. Nothing outside the repository is changed unless asked: Postfix is
# installed only with CI=true or FLOODGATE_INSTALL_TOOLS=1. Otherwise this prints one line
# and the bench reports the throughput suite as skipped, naming that variable. No service
# is ever stopped, restarted or disabled and no process is ever ended.
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

# No daemon starts while we install (tools/apt.sh: hold_services), none on port 25 after.
. "$(dirname "$0")/../tools/apt.sh"
hold_services bench/install-postfix.sh

# "No configuration" writes no /etc/postfix/main.cf: the bench needs only the two tools,
# and without main.cf Debian's postfix.service (ConditionPathExists) and init script do not
# start Postfix, now or at boot. A Postfix already set up on the host is not touched:
# this runs only when the tools are missing.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt_install postfix \
    || echo "bench: postfix could not be installed; throughput will be skipped" >&2
# If a daemon started anyway, it is the host's now and is left alone.
exit 0
