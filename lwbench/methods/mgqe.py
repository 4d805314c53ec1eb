"""MGQE: multi-granular quantized embeddings (Kang et al., 2020): DPQ with frequency tiers, the tail
using fewer centroids. The quantized table is in :mod:`lwbench.methods.common.quantization`."""
from lwbench.methods.common.quantization import QuantizedMethod
from lwbench.options import Option
from lwbench.registry import register


@register
class MGQE(QuantizedMethod):
    name = "mgqe"
    description = "multi-granular quantized embeddings: product-quantization codes, fewer centroids for rare entities"
    options = {**QuantizedMethod.options,
               "tail_k": Option(0, min=1, special={0: f"k // {QuantizedMethod.tail_ratio}"},
                                help="centroids the tail tier may use (at most k)"),
               "head_fraction": Option(0.1, min=0, max=1,
                                       help="the head tier: this fraction of users and of items, by training degree")}
    tiered = True
