# Sourced by tests/install-tools.sh and bench/install-postfix.sh: installing Debian packages
# on a host that is not ours, without any daemon starting.
#
# hold_services LABEL: keep the packages' maintainer scripts from starting a daemon, with a
# policy-rc.d that is ours alone: created atomically (noclobber) only if none exists, and
# removed by the trap on every exit path (EXIT, INT, TERM, HUP) only while it still carries
# our mark. A pre-existing policy-rc.d is never replaced or removed. Only SIGKILL can leave
# ours behind (it would block every service start on the host); its mark names the process,
# and the next run removes it once that process is gone.
#
# apt_install PACKAGE...: install them quietly; on failure refresh the package lists once
# and retry. Returns apt-get's status.

policy=/usr/sbin/policy-rc.d

_policy_ours() { grep -qxF "$1" "$policy" 2>/dev/null; }

hold_services() {
    _policy_mark="# floodgate $1 pid $$: temporary, removed when that process exits"
    stale=$(sed -n 's/^# floodgate [^ ]* pid \([0-9][0-9]*\): temporary.*/\1/p' "$policy" 2>/dev/null)
    if [ -n "$stale" ] && ! kill -0 "$stale" 2>/dev/null; then  # kill -0 only asks
        rm -f "$policy"
    fi
    trap '_policy_ours "$_policy_mark" && rm -f "$policy"' EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if (set -C; printf '#!/bin/sh\n%s\nexit 101\n' "$_policy_mark" >"$policy") 2>/dev/null; then
        chmod 755 "$policy"
    fi
}

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }
}
