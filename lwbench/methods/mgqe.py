"""MGQE: multi-granular quantized embeddings (Kang et al., 2020): DPQ with frequency tiers, the tail
using fewer centroids. The quantized table is in :mod:`lwbench.methods.common.quantization`."""
from lwbench.methods.common.quantization import QuantizedMethod
from lwbench.registry import register


@register
class MGQE(QuantizedMethod):
    name = "mgqe"
    description = "multi-granular quantized embeddings: product-quantization codes, fewer centroids for rare entities"
    options = {**QuantizedMethod.options, "tail_k": 0, "head_fraction": 0.1}
    tiered = True
