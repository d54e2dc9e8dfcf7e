"""The fused attention kernel's launch on a GPU: how long its first launch in a process takes
(Triton builds it, or loads it from its disk cache), and the host time of a later launch over
32 layers (Llama-3-8B shape, 600 keys, bf16), queued without waiting for the device.

    TRITON_CACHE_DIR=/tmp/empty python benchmarks/attention_kernel_launch.py   # twice: built, then cached
"""

from __future__ import annotations

import time

import torch

from opentelemetry_instrumentation_corevital.capture import attention_kernel


def main() -> None:
    queries = [torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16) for _ in range(32)]
    keys = [torch.randn(1, 8, 600, 128, device="cuda", dtype=torch.bfloat16) for _ in range(32)]
    pending = [(q, k, None, None, None) for q, k in zip(queries, keys)]
    for label in ("first", "second"):
        torch.cuda.synchronize()
        start = time.perf_counter()
        assert attention_kernel.fused_newest_query_attention(pending) is not None
        torch.cuda.synchronize()
        print(label, "launch seconds", round(time.perf_counter() - start, 4))
    start = time.perf_counter()
    for _ in range(200):
        attention_kernel.fused_newest_query_attention(pending)
    print("host seconds per launch (32 layers, queued)", round((time.perf_counter() - start) / 200, 6))
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
