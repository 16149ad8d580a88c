#!/usr/bin/env bash
# Instructions per callback through the native loop, counted by callgrind:
# repeatable on a shared machine where times are not. Each figure is
# (instructions with N callbacks - instructions with none) / N.
#
# Usage: bash benches/instructions.sh [N]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --quiet --release --example callback_instructions
bin=target/release/examples/callback_instructions

count() { # KIND N -> total instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

echo "| callback through C | instructions per callback | ratio to direct |"
echo "|---|---|---|"
direct=""
for kind in direct restore lent scope visitor; do
    per=$(( ($(count "$kind" "$n") - $(count "$kind" 0)) / n ))
    direct=${direct:-$per}
    ratio=$(python3 -c "print(f'{$per / $direct:.2f}')")
    echo "| $kind | $per | ${ratio}× |"
done
