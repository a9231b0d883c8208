#!/usr/bin/env python3
"""Prints lazynet/baseline time ratios from criterion's saved estimates.

Run `cargo bench --bench forward` first; this reads target/criterion/<group>/<side>/<param>/new.
Usage: scripts/bench_ratios.py [group] [baseline] [ours]
"""
import json
import pathlib
import sys

group = sys.argv[1] if len(sys.argv) > 1 else "mlp_784_256_10"
base = sys.argv[2] if len(sys.argv) > 2 else "nalgebra"
ours = sys.argv[3] if len(sys.argv) > 3 else "lazynet"
root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion" / group


def median_ns(side, param):
    est = json.loads((root / side / param / "new" / "estimates.json").read_text())
    return est["median"]["point_estimate"]


params = sorted((p.name for p in (root / base).iterdir() if p.name.isdigit()), key=int)
print(f"| batch | {base} | {ours} | {ours} / {base} |")
print("|---:|---:|---:|---:|")
for p in params:
    b, o = median_ns(base, p), median_ns(ours, p)
    unit, div = ("µs", 1e3) if b < 1e6 else ("ms", 1e6)
    print(f"| {p} | {b / div:.2f} {unit} | {o / div:.2f} {unit} | {o / b:.3f} |")
