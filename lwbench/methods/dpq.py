"""DPQ: differentiable product quantization (Chen et al., ICML'20), the single-tier case of the quantized
table in :mod:`lwbench.methods.common.quantization`."""
from lwbench.methods.common.quantization import QuantizedMethod
from lwbench.registry import register


@register
class DPQ(QuantizedMethod):
    name = "dpq"
    description = "differentiable product quantization: every entity stores D codes over K shared centroids"
    tiered = False
