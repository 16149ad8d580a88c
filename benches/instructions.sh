#!/usr/bin/env bash
# Instructions per callback through the native loop, counted by callgrind:
# repeatable on a shared machine where times are not. Each figure is
# (instructions with N callbacks - instructions with none) / N.
#
# Usage: bash benches/instructions.sh [N]   (default 1000000)
# `save_unref` is one `save` plus one `unref` per iteration, with no C
# loop; `private_restore` and `private_in_turn` are one `restore` of a
# private registry's handle per iteration, with no C loop either;
# `static_call` and `user_data_call` one call of a static trampoline, and of
# a `user_data` trampoline with `restore` and a `PanicCarrier`, through a
# function pointer from Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --quiet --release --example callback_instructions
bin=target/release/examples/callback_instructions

count() { # KIND N -> total instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

per() { # KIND -> instructions per iteration
    echo $(( ($(count "$1" "$n") - $(count "$1" 0)) / n ))
}

echo "| callback through C | instructions per callback | ratio to direct |"
echo "|---|---|---|"
direct=""
for kind in direct restore lent restore_with lent_with scope visitor; do
    p=$(per "$kind")
    direct=${direct:-$p}
    ratio=$(python3 -c "print(f'{$p / $direct:.2f}')")
    echo "| $kind | $p | ${ratio}× |"
done
echo
echo "| no callback | instructions per iteration |"
echo "|---|---|"
echo "| save_unref (\`save\` + \`unref\` of a u64, global registry) | $(per save_unref) |"
echo "| box_unbox (\`Box::into_raw(Box::new(u64))\` + \`Box::from_raw\`) | $(per box_unbox) |"
echo
echo "| private registry, no callback | instructions per restore |"
echo "|---|---|"
echo "| private_restore (one handle restored over and over: parked, hot) | $(per private_restore) |"
echo "| private_restore_with (the same with \`restore_with\`) | $(per private_restore_with) |"
echo "| private_in_turn (two handles in turn: never parked) | $(per private_in_turn) |"
echo
echo "| called through a function pointer, no C loop | instructions per call |"
echo "|---|---|"
echo "| static_call (a static trampoline: the pool's entry, restored from a private registry) | $(per static_call) |"
echo "| user_data_call (a \`user_data\` trampoline: \`restore\` + \`PanicCarrier::catch\`) | $(per user_data_call) |"
