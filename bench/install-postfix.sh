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

# Keep the package's maintainer scripts from starting a daemon on port 25, with a
# policy-rc.d that is ours alone: created atomically (noclobber) only if none exists, and
# removed by the trap on every exit path (EXIT, INT, TERM, HUP) only while it still carries
# our mark. A pre-existing policy-rc.d is never replaced or removed. Only SIGKILL can leave
# ours behind (it would block every service start on the host); its mark names the process,
# and the next run removes it once that process is gone.
policy=/usr/sbin/policy-rc.d
mark="# floodgate bench/install-postfix.sh pid $$: temporary, removed when that process exits"
ours() { grep -qxF "$1" "$policy" 2>/dev/null; }
cleanup() { if ours "$mark"; then rm -f "$policy"; fi; }
stale=$(sed -n 's/^# floodgate [^ ]* pid \([0-9][0-9]*\): temporary.*/\1/p' "$policy" 2>/dev/null)
if [ -n "$stale" ] && ! kill -0 "$stale" 2>/dev/null; then  # kill -0 only asks
    rm -f "$policy"
fi
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
if (set -C; printf '#!/bin/sh\n%s\nexit 101\n' "$mark" >"$policy") 2>/dev/null; then
    chmod 755 "$policy"
fi

# "No configuration" writes no /etc/postfix/main.cf: the bench needs only the two tools,
# and without main.cf Debian's postfix.service (ConditionPathExists) and init script do not
# start Postfix, now or at boot. A Postfix already set up on the host is not touched:
# this runs only when the tools are missing.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null 2>&1; } \
    || echo "bench: postfix could not be installed; throughput will be skipped" >&2
# If a daemon started anyway, it is the host's now and is left alone.
exit 0
