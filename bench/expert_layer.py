"""The experts' first layer, batched (models.layers.Experts: the input expanded E times, one
baddbmm) against one (B, in) x (in, E*d) matmul viewed expert-major; rows/s forward and
forward+backward, fp32 and bf16 autocast, the two versions interleaved. BENCHMARKS.md, "The
first expert layer as one matmul"."""

from __future__ import annotations

import argparse
import time

import torch

from models.layers import Experts


def one_matmul(ex: Experts, x: torch.Tensor) -> torch.Tensor:
    """Experts.forward with the first layer as one matmul (the candidate, not adopted)."""
    w0, b0 = ex.weights[0], ex.biases[0]
    e, i, d = w0.shape
    h = torch.addmm(b0.permute(1, 0, 2).reshape(1, e * d), x, w0.permute(1, 0, 2).reshape(i, e * d))
    h = h.relu_().view(-1, e, d).transpose(0, 1)
    for w, b in zip(list(ex.weights)[1:], list(ex.biases)[1:], strict=True):
        h = torch.baddbmm(b, h, w).relu_()
    return h


def rate(fn, ex: Experts, x: torch.Tensor, backward: bool, repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        if backward:
            fn(ex, x).sum().backward()
        else:
            with torch.no_grad():
                fn(ex, x)
    return len(x) * repeats / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experts", type=int, nargs="+", default=[4, 6])
    ap.add_argument("--batches", type=int, nargs="+", default=[2048, 10813])
    ap.add_argument("--in-dim", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    versions = {"batched": Experts.forward, "one matmul": one_matmul}
    for e in args.experts:
        for b in args.batches:
            ex = Experts(e, args.in_dim, [256, 128])
            x = torch.randn(b, args.in_dim, requires_grad=True)
            torch.testing.assert_close(one_matmul(ex, x), ex(x), atol=1e-4, rtol=1e-4)
            for _ in range(2):  # interleaved twice: the machine's drift shows as a spread
                for name, fn in versions.items():
                    for bf16 in (False, True):
                        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                            fwd = rate(fn, ex, x, False, args.repeats)
                            both = rate(fn, ex, x, True, args.repeats)
                        print(
                            f"experts {e} batch {b:>6} {name:10s} {'bf16' if bf16 else 'fp32'}: "
                            f"fwd {fwd:>9,.0f} rows/s  fwd+bwd {both:>9,.0f} rows/s"
                        )


if __name__ == "__main__":
    main()
