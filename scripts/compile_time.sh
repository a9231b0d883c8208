#!/usr/bin/env bash
# Times `cargo check` and `cargo build --release` of generated nets of 10, 50 and 200 Dense
# layers, each followed by a Relu (so 20, 100 and 400 pushed layers), static widths, bound
# statically, with one forward pass, after lazynet itself is built.
#
# Usage: scripts/compile_time.sh [sizes...]   (default: 10 50 200)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/target/compile-time"
sizes=("${@:-10 50 200}")
read -r -a sizes <<<"${sizes[*]}"
widths=(U32 U64 U48 U16)

mkdir -p "$work/src/bin"
cat >"$work/Cargo.toml" <<TOML
[package]
name = "lazynet-compile-time"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
lazynet = { path = "$root" }

[workspace]
TOML

gen() { # gen N: a net of N Dense layers, each followed by a Relu
  local n=$1 prev=U20 i w
  echo '#![recursion_limit = "1024"]'
  echo 'use lazynet::prelude::*;'
  echo 'fn main() {'
  echo '    let net = Net::new()'
  for ((i = 0; i < n; i++)); do
    w=${widths[$((i % ${#widths[@]}))]}
    if ((i % 5 == 4)); then
      echo "        .push(Dense::<$w>::with_input::<$prev>())"
    else
      echo "        .push(Dense::<$w>::new())"
    fi
    echo '        .push(Relu)'
    prev=$w
  done
  echo '        .bind::<U20>();'
  echo '    let y = net.forward(&Batch::<U20>::zeros(1));'
  echo '    println!("{} parameters, output {}x{}", net.param_count(), y.features().size(), y.samples());'
  echo '}'
}

echo 'fn main() {}' >"$work/src/bin/warm.rs"
for n in "${sizes[@]}"; do gen "$n" >"$work/src/bin/net$n.rs"; done

cd "$work"
echo "building lazynet (not timed)..." >&2
cargo check -q --bin warm
cargo build -q --release --bin warm

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'; }

printf '| Dense layers (+ Relu) | pushed layers | cargo check | release build | runs |\n'
printf '|---:|---:|---:|---:|---|\n'
for n in "${sizes[@]}"; do
  touch "src/bin/net$n.rs"
  c=$(secs cargo check -q --bin "net$n")
  touch "src/bin/net$n.rs"
  r=$(secs cargo build -q --release --bin "net$n")
  out=$("target/release/net$n")
  printf '| %d | %d | %s s | %s s | %s |\n' "$n" $((2 * n)) "$c" "$r" "$out"
done
