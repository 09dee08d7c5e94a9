"""anybit for PyTorch: weights of any bit width (1 to 8 bits, integers and small floats) and
the anybit kernels that multiply by them on PyTorch's CUDA tensors and streams.

- :func:`quantize` turns a weight tensor into a :class:`QuantizedWeight`.
- :func:`load` reads a checkpoint written by ``anybit quantize``.
- :func:`matmul` computes ``x @ dequantize(W).T (+ bias)`` with the anybit kernels, as the
  ``torch.library`` custom op ``anybit::matmul`` (``torch.compile`` and CUDA graphs work).
- :mod:`anybit.nn`: :class:`anybit.nn.QuantizedLinear` and :func:`quantize_model`.

docs/python.md describes every function, its errors and the large-M fallback.
"""

import site as _site
import sys as _sys

from . import _native

# NVRTC and the CUDA headers are also looked for in this interpreter's site-packages (the
# nvidia wheels PyTorch depends on), after the usual places; see crates/cuda/src/toolkit.rs.
_native.add_site_packages(
    [path for path in list(_sys.path) + list(_site.getsitepackages()) if path]
)

from ._weight import (  # noqa: E402
    WEIGHT_TYPES,
    GROUP_SIZES,
    QuantizedWeight,
    load,
    quantize,
)
from ._ops import matmul, MAX_TOKENS_PER_LAUNCH  # noqa: E402
from . import nn  # noqa: E402
from .nn import quantize_model  # noqa: E402

__all__ = [
    "GROUP_SIZES",
    "MAX_TOKENS_PER_LAUNCH",
    "QuantizedWeight",
    "WEIGHT_TYPES",
    "load",
    "matmul",
    "nn",
    "quantize",
    "quantize_model",
]
