#!/usr/bin/env bash
# Runs integration test binaries under valgrind: no invalid access, no
# definite leak, in Rust or in the C library of native/.
#
# Usage: .ci/valgrind.sh [TEST_NAME...]
#   With no names, every integration test in tests/ is run.
set -euo pipefail

cd "$(dirname "$0")/.."

run() {
    echo "+ $*" >&2
    "$@"
}

if ! command -v valgrind >/dev/null 2>&1; then
    run apt-get update
    run apt-get install -y valgrind
fi

# Integration test targets only (kind "test"), with their executables.
build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
run cargo test --tests --no-run --message-format=json >"$build_log"
mapfile -t binaries < <(
    grep '"kind":\["test"\]' "$build_log" |
        grep -o '"executable":"[^"]*"' |
        sed 's/^"executable":"//; s/"$//' |
        sort -u
)
if [ "${#binaries[@]}" -eq 0 ]; then
    echo "no integration test binaries were built" >&2
    exit 1
fi

selected=()
for binary in "${binaries[@]}"; do
    name=$(basename "$binary")
    name=${name%-*} # cargo appends -<hash>
    if [ "$#" -eq 0 ]; then
        # The reader-record and later adversarial tests are pure Rust (Miri
        # checks them, with seeds and on i686) and run under 20-second
        # watchdogs timed for native runs, which valgrind's slowdown trips.
        case "$name" in adversarial_round2* | adversarial_round3 | adversarial_parked | adversarial_static | adversarial_completion | adversarial_kinds | adversarial_panic | adversarial_scope | adversarial_cache | readers) continue ;; esac
        selected+=("$binary")
    else
        for wanted in "$@"; do
            if [ "$name" = "$wanted" ]; then
                selected+=("$binary")
            fi
        done
    fi
done
if [ "${#selected[@]}" -eq 0 ]; then
    echo "none of the requested tests was built: $*" >&2
    exit 1
fi

for binary in "${selected[@]}"; do
    run valgrind --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite --show-leak-kinds=definite --quiet \
        "$binary" --quiet
done
echo "valgrind: ${#selected[@]} test binaries clean" >&2
