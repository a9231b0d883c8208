#!/usr/bin/env bash
# Checks that every ```rust snippet of README.md compiles as pasted into a fresh binary crate
# whose only dependency is lazynet: each snippet becomes an example of a throwaway crate under
# target/readme-snippets/ (with `[workspace]`, so it stands alone), built with the repository's
# target directory to reuse compiled dependencies and its Cargo.lock to resolve the same
# versions. Exits non-zero, naming each snippet that does not compile, if any.
#
# Usage: scripts/readme_snippets.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/target/readme-snippets"

rm -rf "$work"
mkdir -p "$work/src" "$work/examples"
cat >"$work/Cargo.toml" <<TOML
[package]
name = "lazynet-readme-snippets"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
lazynet = { path = "$root" }

[workspace]
TOML
echo 'fn main() {}' >"$work/src/main.rs"
cp "$root/Cargo.lock" "$work/Cargo.lock"

# One file per ```rust block (```rust,no_run and the like included), named after the line the
# block starts on: examples/line_17.rs.
awk -v dir="$work/examples" '
  !inside && /^```rust/ { inside = 1; file = sprintf("%s/line_%d.rs", dir, NR); next }
  inside && /^```/      { inside = 0; close(file); next }
  inside                { print > file }
' "$root/README.md"

snippets=("$work"/examples/*.rs)
if [[ ! -e ${snippets[0]} ]]; then
  echo "readme_snippets: no \`\`\`rust block in README.md" >&2
  exit 1
fi
mapfile -t names < <(for f in "${snippets[@]}"; do basename "$f" .rs; done | sort -V)
echo "readme_snippets: ${#names[@]} snippets: ${names[*]}"

export CARGO_TARGET_DIR="$root/target"
cd "$work"
if cargo build --examples --quiet --keep-going; then
  echo "readme_snippets: all ${#names[@]} README snippets compile as programs depending only on lazynet"
  exit 0
fi

failed=()
for name in "${names[@]}"; do
  if ! cargo build --example "$name" --quiet >/dev/null 2>&1; then
    failed+=("$name")
  fi
done
for name in "${failed[@]}"; do
  echo "readme_snippets: FAILED: the README.md snippet whose \`\`\`rust fence is on line ${name#line_} does not compile as a program depending only on lazynet (target/readme-snippets/examples/$name.rs)" >&2
done
if ((${#failed[@]} == 0)); then
  echo "readme_snippets: cargo build failed, though every snippet builds alone" >&2
fi
exit 1
