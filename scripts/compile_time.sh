#!/usr/bin/env bash
# Times `cargo check` and `cargo build --release` of generated nets of 10, 50 and 200 Dense
# layers, each followed by a Relu (so 20, 100 and 400 pushed layers), static widths, bound
# statically, with one forward pass, after lazynet itself is built. Sizes written `convN` are
# nets of N 3×3 convolutions (padding 1, each followed by a Relu, a 2×2 max pool after every
# tenth) on a 3×224×224 image, then Flatten and a dense layer whose input size is declared, so
# every image size and the flatten are computed and checked by the compiler.
#
# Usage: scripts/compile_time.sh [sizes...]   (default: 10 50 200; e.g. conv10 conv50)
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

gen_conv() { # gen_conv N: N convolutions on 3×224×224, a pool after every tenth
  local n=$1 i side=224
  echo '#![recursion_limit = "1024"]'
  echo 'use lazynet::prelude::*;'
  echo 'fn main() {'
  echo '    let net = Net::new()'
  for ((i = 0; i < n; i++)); do
    echo '        .push(Conv2d::<U8, U3>::new().padding::<U1>())'
    echo '        .push(Relu)'
    if ((i % 10 == 9)); then
      echo '        .push(MaxPool2d::<U2>::new())'
      side=$((side / 2))
    fi
  done
  echo '        .push(Flatten)'
  echo "        .push(Dense::<U10>::with_input::<lazynet::typenum::op!(U8 * U$side * U$side)>())"
  echo '        .bind::<Image<U3, U224, U224>>();'
  echo '    let y = net.forward(&Batch::<Image<U3, U224, U224>>::zeros(1));'
  echo '    println!("{} parameters, output {}x{}", net.param_count(), y.features().size(), y.samples());'
  echo '}'
}

echo 'fn main() {}' >"$work/src/bin/warm.rs"
for n in "${sizes[@]}"; do
  case $n in
    conv*) gen_conv "${n#conv}" >"$work/src/bin/net$n.rs" ;;
    *) gen "$n" >"$work/src/bin/net$n.rs" ;;
  esac
done

cd "$work"
# Every timing compiles the net from scratch: incremental reuse would time nothing.
export CARGO_INCREMENTAL=0
echo "building lazynet (not timed)..." >&2
cargo check -q --bin warm
cargo build -q --release --bin warm

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'; }

printf '| net | pushed layers | cargo check | release build | runs |\n'
printf '|---|---:|---:|---:|---|\n'
for n in "${sizes[@]}"; do
  touch "src/bin/net$n.rs"
  c=$(secs cargo check -q --bin "net$n")
  touch "src/bin/net$n.rs"
  r=$(secs cargo build -q --release --bin "net$n")
  out=$("target/release/net$n")
  pushed=$(grep -c '\.push(' "src/bin/net$n.rs")
  printf '| %s | %d | %s s | %s s | %s |\n' "$n" "$pushed" "$c" "$r" "$out"
done
