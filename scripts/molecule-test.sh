#!/usr/bin/env bash
# molecule test of one scenario, its output as it comes; when it fails, the reason again at the
# very end (failed tests with their assertion, failed Ansible tasks), where a CI log's tail shows
# it: Molecule's own cleanup and destroy output would otherwise bury it.
# Usage: scripts/molecule-test.sh SCENARIO (with molecule on PATH)
set -uo pipefail
scenario=${1:?usage: $0 SCENARIO}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

molecule test -s "$scenario" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    # Without colours, and without the frame Molecule draws around a step's output.
    plain=$(sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^ *│ \{0,1\}//' "$log")
    echo
    echo "==== molecule test -s $scenario failed (exit $status); why, repeated from above ===="
    # pytest's tracebacks cut to their end (the last assertion and its message), then its
    # summary of the failed tests. The frame wraps long lines: a line may go on in the next.
    sed -n '/=\{5,\} FAILURES/,/=\{3,\} [0-9]\{1,\} failed/p' <<<"$plain" | tail -n 90
    grep -E '^fatal: |^failed: |^ERROR ' <<<"$plain" | cut -c1-400 | tail -n 10
fi
exit "$status"
