"""Product quantization shared by DPQ (Chen et al., ICML'20) and MGQE, its multi-granular variant for
recommendation (Kang et al., 2020); docs/protocol.md §6.6. Each registers a subclass of :class:`QuantizedMethod`.

Training keeps a query table ``Qy`` (``N x d``, training only) cut into ``D`` groups of width ``d/D``.
Per group ``j`` an entity picks the code ``c = argmax_k r_k`` over ``K`` centroids, with responses
``r_k = -||q^j - K^j_k||^2`` (VQ, values tied to the keys) or ``<q^j, K^j_k>`` (SX, separate values),
batch-normalized over all entities without scale or shift. VQ outputs ``q + sg(V[c] - q)`` and adds
``mean||V[c] - sg(q)||^2 + beta * mean||sg(V[c]) - q||^2``; SX outputs the straight-through one-hot
of ``softmax(r)`` times the values. MGQE splits entities into frequency tiers by training degree (the
top ``head_fraction`` of users and of items are the head): the head may use all ``K`` centroids, the
tail only the first ``tail_k``. DPQ is the single-tier case.

A deployment keeps the value codebooks (``K * d`` floats) and every entity's codes
(``ceil(log2 K_tier)`` bits per group; MGQE also one tier bit per entity). The Table-3 count is
``K * d + ceil(sum of code bits / 32)`` (codes as float32 equivalents; docs/protocol.md §5.1, §5.5). The codes
are stored when the module is built and after every training epoch, so they travel with every
checkpoint, and evaluation forms ``X_0`` from the stored codes, never from a fresh argmax.

Sizing: ``k`` is the largest number of centroids (at most ``N``) that fits the budget with ``D``
groups; MGQE's tail uses ``k // 4`` (docs/protocol.md §6.6: 256 / 64). ``k`` need not be a power of two: on
Gowalla's 500-bucket budget DPQ gets k=361 (9-bit codes, 205,596 values) rather than the 2.2 table's
k=256 (174,446), which ``--set dpq.k=256`` reproduces.
"""
import math

import numpy as np
import torch
from torch import nn

from lwbench.budget import BudgetError, ParamCount
from lwbench.options import TO_BUDGET, ConfigError, Option, one_of
from lwbench.plugin import STORE_DTYPE, BuildContext, EmbeddingModule, InferenceState, Method, Stage, Step

MODES = ("vq", "sx")
BN_EPS = 1e-5


def code_width(k: int) -> int:
    """Bits of one code over ``k`` centroids."""
    return math.ceil(math.log2(k)) if k > 1 else 0


def head_size(n: int, fraction: float) -> int:
    return math.floor(fraction * n + 1e-9)


def head_entities(train, fraction: float) -> np.ndarray:
    """Boolean mask over global entities: the top ``fraction`` of users and of items by training
    degree (ties: the lower id first)."""
    head = []
    for degrees in (np.asarray(train.sum(axis=1)).ravel(), np.asarray(train.sum(axis=0)).ravel()):
        mask = np.zeros(len(degrees), dtype=bool)
        mask[np.argsort(-degrees, kind="stable")[:head_size(len(degrees), fraction)]] = True
        head.append(mask)
    return np.concatenate(head)


def quantized_count(dim: int, groups: int, tiers: list[tuple[int, int]], tier_bits: int) -> ParamCount:
    """``tiers``: (entities, centroids) per tier; ``tier_bits``: bits that record each entity's tier."""
    codes = sum(groups * entities * code_width(k) for entities, k in tiers)
    values = max(k for _, k in tiers) * dim
    return ParamCount(table3=values + math.ceil(codes / 32), float_values=values, code_bits=codes + tier_bits)


ASSIGN_CHUNK_ELEMENTS = 1 << 19   # responses per piece of a CPU assignment: 2 MB of floats, which stay in cache


def best_codes(augmented: torch.Tensor, keys: torch.Tensor, chunk: int) -> torch.Tensor:
    """Each entity's best centroid per group, ``(D, n)``, from the responses ``augmented @ keys`` formed
    ``chunk`` entities at a time. Every response is the same dot product over ``w + 2`` values whatever the
    piece (tests/test_mgqe.py checks the codes bit for bit)."""
    return torch.cat([torch.bmm(augmented[:, start:start + chunk], keys).argmax(-1)
                      for start in range(0, augmented.shape[1], chunk)]
                     or [augmented.new_empty(augmented.shape[0], 0, dtype=torch.long)], dim=1)   # an empty tier


class SoftmaxStraightThrough(torch.autograd.Function):
    """SX's rows of one tier, ``(D, n, w)``: forward the values of each group's best centroid (the one-hot
    of ``softmax(r)``), backward through the softmax (the straight-through estimator), with responses
    ``r = augmented @ keys``.

    Written as a function rather than left to autograd because the responses ``(D, n, K)`` are dense (285 MB
    per tensor for DPQ on Last.fm): autograd would keep the responses, probabilities, one-hot and their
    gradients whole, each in freshly mapped memory at every step. Here they are formed ``chunk`` entities at a
    time (see :meth:`QuantizedTable.chunk`), in forward and again in backward, so a piece stays in cache and
    nothing of size ``n x K`` outlives it. In ``bench/speed.py --method dpq --dataset lastfm --set dpq.mode=sx``
    on one CPU thread an epoch took 95 s left to autograd (44 million page faults) and takes 26-28 s this way,
    where VQ takes 10 s (the SX backward is about five dense matrix products per response)."""

    @staticmethod
    def forward(ctx, augmented, keys, values, chunk):
        """``augmented``: ``(D, n, a)``; ``keys``: ``(D, a, K)``; ``values``: ``(D, K, w)``."""
        codes = best_codes(augmented, keys, chunk)
        ctx.save_for_backward(augmented, keys, values, codes)
        ctx.chunk = chunk
        return torch.gather(values, 1, codes.unsqueeze(-1).expand(-1, -1, values.shape[-1]))

    @staticmethod
    def backward(ctx, grad_rows):
        augmented, keys, values, codes = ctx.saved_tensors
        grad_augmented = torch.empty_like(augmented)
        grad_keys = torch.zeros_like(keys)
        groups, k, width = values.shape
        grad_values = values.new_zeros(groups * k, width)
        for start in range(0, augmented.shape[1], ctx.chunk):
            piece = slice(start, start + ctx.chunk)
            probs = torch.softmax(torch.bmm(augmented[:, piece], keys), dim=-1)                 # (D, m, K)
            grad_probs = torch.bmm(grad_rows[:, piece], values.transpose(1, 2))               # (D, m, K)
            grad_response = probs * (grad_probs - (grad_probs * probs).sum(-1, keepdim=True))
            grad_augmented[:, piece] = torch.bmm(grad_response, keys.transpose(1, 2))
            grad_keys += torch.bmm(augmented[:, piece].transpose(1, 2), grad_response)
        # the rows are the chosen values: each value's gradient sums the rows that chose it, in row order
        # (index_add_ is deterministic in the trainer's deterministic mode, see lwbench/training/model.py)
        offsets = torch.arange(groups, device=codes.device).unsqueeze(1) * k
        grad_values.index_add_(0, (codes + offsets).reshape(-1), grad_rows.reshape(-1, width))
        return grad_augmented, grad_keys, grad_values.view(groups, k, width), None


class QuantizedTable(EmbeddingModule):
    """Product-quantized layer-0 rows; each tier of entities may use the first ``k`` centroids.

    Both response kinds are linear in the augmented query ``[q^j, ||q^j||^2, 1]``, so the batch norm
    over entities folds into the keys: its mean and variance per centroid follow from the mean and
    covariance of the augmented queries (``(w+2) x (w+2)`` per group). One matrix product per tier then
    gives the normalized responses, without passes over a ``D x N x K`` tensor for the statistics.
    """

    def __init__(self, ctx: BuildContext, tiers: dict[str, tuple[torch.Tensor, int]], store_tiers: bool):
        """``tiers``: name -> (boolean entity mask, centroids the tier may use); the masks partition
        the entities and the largest limit is the codebook size. ``store_tiers``: a deployment records
        each entity's tier (one bit per entity)."""
        super().__init__(ctx)
        options = ctx.options
        self.groups, self.dim = options["groups"], options["dim"]
        self.mode, self.beta, self.response_bn = options["mode"], options["beta"], options["response_bn"]
        self.k = max(k for _, k in tiers.values())
        width = self.dim // self.groups
        std = options["init_std"]
        self.query = nn.Parameter(torch.randn(self.n_entities, self.dim, device=ctx.device) * std)
        self.keys = nn.Parameter(torch.randn(self.groups, self.k, width, device=ctx.device) * std)
        self.values = (nn.Parameter(torch.randn(self.groups, self.k, width, device=ctx.device) * std)
                       if self.mode == "sx" else None)
        self.tier_limits = {}
        for name, (mask, k) in tiers.items():
            self.register_buffer(f"{name}_rows", mask.nonzero().squeeze(1).to(ctx.device))
            self.tier_limits[name] = k
        self.store_tiers = store_tiers
        self.register_buffer("codes", torch.zeros(self.n_entities, self.groups, dtype=torch.long, device=ctx.device))
        self.store_codes()
        self._aux = None

    # --- quantization ----------------------------------------------------------------------------
    def codebook(self) -> torch.Tensor:
        """The centroids a deployment keeps: ``(D, K, d/D)``."""
        return self.keys if self.values is None else self.values

    def tier_rows(self, name: str) -> torch.Tensor:
        return getattr(self, f"{name}_rows")

    def scoring(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(augmented queries ``(D, N, w+2)``, scoring keys ``(D, w+2, K)``): their product is the
        response, batch-normalized over all entities when ``response_bn``."""
        q = query.view(-1, self.groups, self.dim // self.groups).transpose(0, 1)            # (D, N, w)
        augmented = torch.cat((q, q.square().sum(-1, keepdim=True), torch.ones_like(q[..., :1])), dim=-1)
        k = self.keys
        if self.mode == "vq":   # -||q - k||^2 = 2 q.k - ||q||^2 - ||k||^2
            keys = torch.cat((2 * k, -torch.ones_like(k[..., :1]), -k.square().sum(-1, keepdim=True)), dim=-1)
        else:                   # q.k
            keys = torch.cat((k, torch.zeros_like(k[..., :2])), dim=-1)
        keys = keys.transpose(1, 2)                                                           # (D, w+2, K)
        if not self.response_bn:
            return augmented, keys
        mean = augmented.mean(dim=1, keepdim=True)                                            # (D, 1, w+2)
        centered = augmented - mean
        covariance = torch.bmm(centered.transpose(1, 2), centered) / augmented.shape[1]      # (D, w+2, w+2)
        response_mean = torch.bmm(mean, keys)                                                 # (D, 1, K)
        response_var = (keys * torch.bmm(covariance, keys)).sum(1, keepdim=True)              # (D, 1, K)
        scale = torch.rsqrt(response_var + BN_EPS)
        # (r - mean) * scale: scale every key coefficient, and move the mean into the constant's one
        shift = torch.zeros_like(keys)
        shift[:, -1:, :] = response_mean
        return augmented, (keys - shift) * scale

    def chunk(self, k: int, rows: int) -> int:
        """Entities per piece of a tier's ``(D, rows, k)`` responses: on a CPU a few hundred
        (:data:`ASSIGN_CHUNK_ELEMENTS`), since the whole tensor (285 MB for DPQ on Last.fm) would be written to
        memory and read back at every training step where a piece stays in cache, three times faster; a GPU
        takes each tier whole."""
        return max(1, rows) if self.query.device.type != "cpu" else max(1, ASSIGN_CHUNK_ELEMENTS // (self.groups * k))

    def assign(self, query: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, D)``: each entity's best centroid per group within its tier's limit."""
        codes = torch.empty(self.n_entities, self.groups, dtype=torch.long, device=query.device)
        augmented, keys = self.scoring(query)
        for name, k in self.tier_limits.items():
            rows = self.tier_rows(name)
            codes[rows] = best_codes(augmented[:, rows], keys[:, :, :k], self.chunk(k, len(rows))).transpose(0, 1)
        return codes

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Rows ``(N, d)`` formed from codes ``(N, D)`` and the codebook."""
        group = torch.arange(self.groups, device=codes.device)
        return self.codebook()[group, codes].reshape(codes.shape[0], self.dim)

    @torch.no_grad()
    def store_codes(self) -> None:
        """Fix the codes of every entity under the current weights: what a deployment keeps."""
        self.codes.copy_(self.assign(self.query))

    # --- forward and hooks -----------------------------------------------------------------------
    def layer0(self) -> torch.Tensor:
        self._aux = None
        if not self.training:
            return self.lookup(self.codes)
        if self.mode == "vq":
            with torch.no_grad():
                codes = self.assign(self.query)
            out = self.lookup(codes)
            self._aux = ((out - self.query.detach()).square().mean()
                         + self.beta * (out.detach() - self.query).square().mean())
            return self.query + (out - self.query).detach()
        augmented, keys = self.scoring(self.query)
        rows = torch.zeros(self.groups, self.n_entities, self.dim // self.groups, device=self.query.device)
        for name, k in self.tier_limits.items():
            tier = self.tier_rows(name)
            picked = SoftmaxStraightThrough.apply(augmented[:, tier], keys[:, :, :k], self.values[:, :k],
                                                  self.chunk(k, len(tier)))
            rows = rows.index_copy(1, tier, picked)
        return rows.transpose(0, 1).reshape(-1, self.dim)

    def rows(self, entities: torch.Tensor) -> torch.Tensor:
        """In evaluation, a deployment looks the entities' stored codes up in the codebook, nothing more."""
        return super().rows(entities) if self.training else self.lookup(self.codes[entities])

    def aux_loss(self, step: Step) -> torch.Tensor | None:
        return self._aux

    def end_epoch(self, stage: Stage, epoch: int) -> bool:
        self.store_codes()
        return False

    def diagnostics(self) -> dict:
        used = [int(torch.unique(self.codes[:, j]).numel()) for j in range(self.groups)]
        return {"mean_centroids_used": float(np.mean(used))}

    # --- accounting ------------------------------------------------------------------------------
    def param_count(self) -> ParamCount:
        """The plan's formula for the built tiers. Not the default derived from :meth:`inference_state`:
        MGQE stores one tier bit per entity (in ``code_bits`` and ``storage_bytes``), but its Table-3
        count, the one of the published budget table (tests/test_mgqe.py), holds only the codebook and
        the codes, so the default would count ``ceil(N / 32)`` values too many. The contract tests
        check that the inventory of this count equals :meth:`inference_state`."""
        tiers = [(self.tier_rows(name).numel(), k) for name, k in self.tier_limits.items()]
        count = quantized_count(self.dim, self.groups, tiers, self.n_entities if self.store_tiers else 0)
        return count.with_value_width(self.store_dtype.itemsize)

    def inference_state(self) -> InferenceState:
        state = InferenceState(values={"codebook": self.codebook().detach()})
        for name, k in self.tier_limits.items():
            state.codes[f"{name}_codes"] = (self.codes[self.tier_rows(name)], code_width(k))
        if self.store_tiers:
            first = next(iter(self.tier_limits))
            in_first = torch.zeros(self.n_entities, dtype=torch.bool, device=self.codes.device)
            in_first[self.tier_rows(first)] = True
            state.codes["tier"] = (in_first, 1)
        return state


class QuantizedMethod(Method):
    """Sizing, counting and building of a quantized table; DPQ and MGQE register subclasses that
    differ in their options and in ``tiered``."""

    options = {
        "dim": Option(128, min=1, help="embedding dimension d"),
        "groups": Option(8, min=1, help="D: code groups per entity, each d/D wide (must divide dim)"),
        "k": Option(0, min=1, special=TO_BUDGET, help="K: centroids per group (the head tier's with tiers)"),
        "mode": Option("vq", choices=MODES, help="vq: values tied to the keys; sx: separate values, softmax responses",
                       search=one_of(*MODES)),   # DPQ's two variants
        "beta": Option(0.0, min=0, help="weight of VQ's commitment term"),
        "response_bn": Option(True, help="batch-normalize the responses over all entities"),
        "init_std": Option(0.1, above=0, help="standard deviation of the N(0, std^2) initialization"),
        "store_dtype": STORE_DTYPE,
    }
    tiered = True
    tail_ratio = 4            # tail centroids = k / 4 unless tail_k is set (docs/protocol.md §6.6: 256 / 64)

    def configure(self, options: dict, budget: int, stats) -> dict:
        if options["dim"] % options["groups"]:
            raise ConfigError(f"{self.name}.groups must divide {self.name}.dim={options['dim']}, "
                              f"got {options['groups']}")
        if options["k"]:
            configured = self.with_k(options, options["k"])
            if self.planned_count(configured, stats).table3 > budget:
                raise BudgetError(f"{self.name} with k={options['k']} needs "
                                  f"{self.planned_count(configured, stats).table3} parameters, over the budget of "
                                  f"{budget}; leave {self.name}.k=0 to size it to the budget")
            return configured
        smallest = max(2 * self.tail_ratio, options["tail_k"]) if self.tiered else 2

        def fits(k: int) -> bool:
            return self.planned_count(self.with_k(options, k), stats).table3 <= budget

        if not fits(smallest):
            least = self.planned_count(self.with_k(options, smallest), stats).table3
            raise BudgetError(f"{self.name} with {options['groups']} groups needs at least k={smallest}; the smallest "
                              f"budget it supports is {least}, got {budget}")
        low, high = smallest, max(smallest, stats.n_entities)   # the count grows with k: bisect
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        return self.with_k(options, low)

    def with_k(self, options: dict, k: int) -> dict:
        if not self.tiered:
            return {**options, "k": k}
        tail = options["tail_k"] or k // self.tail_ratio
        if not 1 <= tail <= k:
            raise ConfigError(f"mgqe.tail_k must be between 1 and k={k}, got {tail}")
        return {**options, "k": k, "tail_k": tail}

    def tier_sizes(self, options: dict, stats) -> list[tuple[int, int]]:
        if not self.tiered:
            return [(stats.n_entities, options["k"])]
        head = head_size(stats.n_users, options["head_fraction"]) + head_size(stats.n_items, options["head_fraction"])
        return [(head, options["k"]), (stats.n_entities - head, options["tail_k"])]

    def planned_count(self, options: dict, stats) -> ParamCount:
        return quantized_count(options["dim"], options["groups"], self.tier_sizes(options, stats),
                               stats.n_entities if self.tiered else 0)

    def build(self, ctx: BuildContext) -> QuantizedTable:
        options = ctx.options
        if not self.tiered:
            everyone = torch.ones(ctx.interactions.n_entities, dtype=torch.bool)
            return QuantizedTable(ctx, {"all": (everyone, options["k"])}, store_tiers=False)
        head = torch.from_numpy(head_entities(ctx.interactions.train, options["head_fraction"]))
        return QuantizedTable(ctx, {"head": (head, options["k"]), "tail": (~head, options["tail_k"])},
                              store_tiers=True)

