#!/bin/sh
# `make test`: every test, in two passes. First all but the bench lane, in parallel
# (pytest-xdist, WORKERS processes; a module whose tests share a process stays on one
# worker; modules of the longest kinds first, tests/support/lanes.py); then the bench
# smoke on two workers of its own: they measure latency under a load they make themselves,
# which the whole suite would add to, and assert bounds that hold with one other suite
# beside them. Each pass lists its
# slowest tests. Extra arguments go to both passes (a pass they select nothing from is
# not a failure).
#
# usage: tests/suite.sh PYTHON WORKERS [pytest arguments...]
set -u
python=$1
workers=$2
shift 2
status=0
run() {
    "$python" -m pytest "$@"
    code=$?
    # 5: nothing selected in this pass (say, arguments naming one test file).
    if [ "$code" -ne 0 ] && [ "$code" -ne 5 ]; then
        status=$code
    fi
}
run -n "$workers" --dist loadgroup -m "not bench" --durations=30 "$@"
run -m bench -n 2 --durations=10 "$@"
exit "$status"
