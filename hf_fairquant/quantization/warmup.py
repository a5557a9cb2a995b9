"""One int2/int4 forward so optimum-quanto builds and caches its C++ extension at install time.

``python -m hf_fairquant.quantization.warmup`` (the Makefile runs it once).
"""

import time

import torch


def warm_up() -> float:
    from .api import apply_plan, freeze
    from .recipe import LayerQuant

    start = time.perf_counter()
    for bits in (2, 4, 8):
        model = torch.nn.Sequential(torch.nn.Linear(128, 128))
        apply_plan(model, {"0": LayerQuant(bits)})
        freeze(model)
        with torch.no_grad():
            model(torch.randn(4, 128))
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"optimum-quanto warm-up done in {warm_up():.1f}s")
