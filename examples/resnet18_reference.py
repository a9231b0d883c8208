"""PyTorch's side of a manual check of lazynet against the full torchvision ResNet-18.

Nothing this script writes is committed (ResNet-18's weights are 45 MB); it is the reference
for a manual run, and for timing PyTorch on the same machine.

Subcommands:

    make --out DIR
        torchvision.models.resnet18(weights=None) (1000 classes, torchvision's random
        initialization), seeded. Three training-mode forward passes on random N(0,1) batches
        of 4x3x224x224 (no_grad, no optimizer) train the BatchNorm running statistics
        (num_batches_tracked = 3), then the net is put in eval mode. Writes
          DIR/resnet18.safetensors  the state_dict under torchvision's names ("conv1.weight",
                                    "layer2.0.downsample.1.running_var", "fc.bias", ...),
                                    float32, every "*.num_batches_tracked" int64 of shape [];
          DIR/x.safetensors         "x": float32 [2,3,224,224], N(0,1), seeded;
          DIR/y_torch.safetensors   "y": float32 [2,1000], the float32 eval-mode logits;
                                    "y64": float64 [2,1000], the logits of a float64 copy of
                                    the same (float32) state.

    compare --ref DIR/y_torch.safetensors --got y.safetensors
        Prints the max |got.y - ref.y64|, the max |got.y - ref.y| and the max |ref.y64|; exits
        with status 1 if the difference from y64 exceeds 1e-3. got.y may be float32 or float64,
        shape [2,1000].

    time [--threads T] [--batch 1] [--rounds R]
        Times eval-mode inference of resnet18 (torchvision's random weights) on a batch of
        3x224x224 inputs under torch.inference_mode() with torch.set_num_threads(T): 5 warm-up
        rounds, then R timed rounds; prints the median and the minimum in milliseconds.

Typical use (from the repository root; torch 2.15.0 and torchvision 0.29.2 in a venv):

    ~/torch/bin/python examples/resnet18_reference.py make --out /work/resnet18_check
    # ... run lazynet on /work/resnet18_check/{resnet18,x}.safetensors, write y.safetensors ...
    ~/torch/bin/python examples/resnet18_reference.py compare \\
        --ref /work/resnet18_check/y_torch.safetensors --got y.safetensors
    ~/torch/bin/python examples/resnet18_reference.py time --threads 1 --rounds 30
    ~/torch/bin/python examples/resnet18_reference.py time --threads 2 --rounds 30

Requirements: torch, torchvision, safetensors, numpy (python3 -m venv ~/torch;
~/torch/bin/pip install torch==2.15.0 && ~/torch/bin/pip install --no-deps torchvision==0.29.2;
~/torch/bin/pip install numpy safetensors).
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torchvision.models import resnet18

SEED = 20261204
TOLERANCE = 1e-3


def make(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    model = resnet18(weights=None)
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.randn(4, 3, 224, 224))
        model.eval()
        x = torch.randn(2, 3, 224, 224)
        y = model(x)
        y64 = copy.deepcopy(model).double().eval()(x.double())
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            assert v.dtype == torch.int64 and v.dim() == 0 and v.item() == 3, k
        else:
            assert v.dtype == torch.float32, k
    save_file(state, str(out / "resnet18.safetensors"), metadata={"format": "pt"})
    save_file({"x": x.contiguous()}, str(out / "x.safetensors"), metadata={"format": "pt"})
    save_file(
        {"y": y.contiguous(), "y64": y64.contiguous()},
        str(out / "y_torch.safetensors"),
        metadata={"format": "pt"},
    )
    print(f"max |y - y64| (PyTorch float32 vs float64): {(y.double() - y64).abs().max():.3e}")
    print(f"max |y64|: {y64.abs().max():.4f}")
    for name in ("resnet18.safetensors", "x.safetensors", "y_torch.safetensors"):
        print(f"{out / name}: {(out / name).stat().st_size} bytes")


def compare(ref, got):
    r = load_file(ref)
    g = load_file(got)["y"].double()
    if g.shape != r["y64"].shape:
        print(f"shape {list(g.shape)}, expected {list(r['y64'].shape)}")
        return 1
    d64 = (g - r["y64"]).abs().max().item()
    d32 = (g - r["y"].double()).abs().max().item()
    print(f"max |y - y64|: {d64:.3e}")
    print(f"max |y - y (PyTorch float32)|: {d32:.3e}")
    print(f"max |y64|: {r['y64'].abs().max().item():.4f}")
    if d64 > TOLERANCE:
        print(f"FAIL: {d64:.3e} > {TOLERANCE}")
        return 1
    print("ok")
    return 0


def time_inference(threads, batch, rounds):
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    model = resnet18(weights=None).eval()
    x = torch.randn(batch, 3, 224, 224)
    times = []
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        for _ in range(rounds):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    print(
        f"torch {torch.__version__}, {threads} thread(s), batch {batch}, {rounds} rounds: "
        f"median {statistics.median(times):.2f} ms, min {min(times):.2f} ms"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make")
    p.add_argument("--out", required=True)
    p = sub.add_parser("compare")
    p.add_argument("--ref", required=True)
    p.add_argument("--got", required=True)
    p = sub.add_parser("time")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    if args.command == "make":
        make(args.out)
    elif args.command == "compare":
        sys.exit(compare(args.ref, args.got))
    else:
        time_inference(args.threads, args.batch, args.rounds)


if __name__ == "__main__":
    main()
