"""PyTorch side of `cargo bench -p doctune-models --bench gemm`: GFLOP/s of plain f32 GEMMs of
the given shapes (in bf16 when the third argument is `bf16`), `x @ w.T` (a projection's forward, `w` stored [n, k] as in a model file) or
`g @ w` (its input gradient, `w` [k, n]), on the given number of threads. Prints one JSON line:
the rates in order and the kernel family ATen reports. Needs torch (not part of CI)."""
import json
import sys
import time

import torch


def main():
    threads, shapes = int(sys.argv[1]), json.loads(sys.argv[2])
    dtype = torch.bfloat16 if len(sys.argv) > 3 and sys.argv[3] == "bf16" else torch.float32
    torch.set_num_threads(threads)
    rates = []
    for m, k, n, transposed in shapes:
        a = torch.randn(m, k, dtype=dtype)
        w = torch.randn(n, k, dtype=dtype) if transposed else torch.randn(k, n, dtype=dtype)
        f = (lambda: a @ w.t()) if transposed else (lambda: a @ w)
        for _ in range(3):
            f()
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.4:
            f()
            reps += 1
        rates.append(2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9)
    print(json.dumps({"gflops": rates, "kernels": torch.backends.cpu.get_cpu_capability()}))


if __name__ == "__main__":
    main()
