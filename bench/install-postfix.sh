#!/bin/sh
# Postfix's smtp-source and smtp-sink, the reference load generator and ceiling for
# `make bench`. Idempotent; never leaves a Postfix daemon running; a failure only means the
# bench reports the ratio to smtp-sink as skipped.
set -u
if [ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench: cannot install postfix here (needs root and apt-get); ratios will be skipped" >&2
    exit 0
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
# Keep the package's maintainer scripts from starting a daemon on port 25.
policy=/usr/sbin/policy-rc.d
created=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=yes
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null 2>&1; } \
    || echo "bench: postfix could not be installed; ratios will be skipped" >&2
[ "$created" = yes ] && rm -f "$policy"
exit 0
