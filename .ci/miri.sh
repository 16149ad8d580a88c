#!/usr/bin/env bash
# CI's Miri runs, in two lanes that .ci/run starts side by side: Miri
# interprets a program on one core, so on two cores the lanes together take
# about half the time of one after the other. Both use strict provenance: a
# handle is an integer, never a pointer, and the crate never turns one into
# a pointer (its locks are std's, whose parking is strict-provenance clean).
# FFI tests are compiled out under cfg(miri).
#
# Usage: .ci/miri.sh every-test|schedules-and-i686
#   every-test         every pure-Rust test once, on x86_64 (then more
#                      schedules for the stress and teardown tests)
#   schedules-and-i686 more schedules (seeds) for the other threaded
#                      tests, then the tests again on a 32-bit target
# On the 2-core machine CI runs on (2026-11-29), one after the other:
# every-test 30 minutes, the schedules 25, i686 14, and valgrind, which
# .ci/run runs after every-test, 5; side by side, all of CI took 53
# minutes (3196 s), against 78 (4670 s) before. On an Intel Xeon host
# (2026-11-29, 1d621e1) it took 72 minutes (4340 s), 04:05-05:17 UTC;
# the steps before Miri took 12 of them there, against 5.
# Run `cargo +nightly miri setup` for both targets first: two lanes setting
# up one sysroot at once would race.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
    echo
    echo "+ $*"
    "$@"
}

export MIRIFLAGS=-Zmiri-strict-provenance

# Miri's data-race detector depends on the schedule: `seeds 1..N ARGS` runs
# `cargo miri test ARGS` under the N - 1 schedules of seeds 1 to N - 1.
seeds() {
    local range=$1
    shift
    MIRIFLAGS="$MIRIFLAGS -Zmiri-many-seeds=$range" run cargo +nightly miri test "$@"
}

case "${1:-}" in
every-test)
    run cargo +nightly miri test --lib --tests
    # (The only schedules here, to even out the lanes' times.)
    seeds 1..6 --test stress --test teardown --test teardown_shared_id --test readers
    ;;
schedules-and-i686)
    seeds 1..4 --test adversarial --test adversarial_round2
    seeds 1..3 --test adversarial_round3 -- concurrent
    seeds 1..4 --test adversarial_restore_with -- hot_then_other stress_ hot_vs_shared thread_local
    # The stale hot handle racing an unref (tests/adversarial_parked.rs).
    seeds 1..6 --test adversarial_parked -- stale_hot
    # Static trampolines over the pools' hot handle (tests/adversarial_static.rs).
    seeds 1..4 --test adversarial_static
    # The panic carrier's first payload and the refusal log's snapshot, raced (tests/adversarial_panic.rs).
    seeds 1..4 --test adversarial_panic -- no_second_payload a_snapshot_never counts_and_the_ring
    # Scopes and lends called across their end from other threads (tests/adversarial_scope.rs).
    seeds 1..4 --test adversarial_scope -- across_the_scopes_end parked_workers unref_races
    # A stale handle and a parked owner racing the reuse of their slot through the cache (tests/adversarial_cache.rs).
    seeds 1..4 --test adversarial_cache -- stale_handles_racing parked_owner_racing
    seeds 1..4 --lib -- scope:: registry::tests::another lend:: kinds:: readers:: free:: parked:: restore_with::
    # A 32-bit target: the narrower handle layout and state word, and a u64
    # only 4-aligned.
    run cargo +nightly miri test --target i686-unknown-linux-gnu --lib --test model --test stress --test teardown --test teardown_shared_id --test adversarial \
        --test readers --test adversarial_round2 --test adversarial_round3 --test adversarial_restore_with \
        --test adversarial_parked --test adversarial_static --test adversarial_completion --test adversarial_kinds --test adversarial_panic --test adversarial_scope \
        --test adversarial_cache --test static_pool_registry
    ;;
*)
    echo "usage: $0 every-test|schedules-and-i686" >&2
    exit 2
    ;;
esac
