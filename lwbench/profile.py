"""The inference profile of a trained run (docs/protocol.md §5.6): what a deployment stores, by component, and
how long the two inference operations take on the run's device.

* ``bytes``: the stored layer-0 embeddings by component (values by dtype, indices by range, packed codes,
  from :meth:`lwbench.plugin.EmbeddingModule.stored_state`) and the item bias (float32), which neither
  accounting convention counts (docs/protocol.md §5.2);
* ``rows_seconds``: median time to form the layer-0 rows of :data:`ROW_BATCH` random entities
  (:meth:`lwbench.plugin.EmbeddingModule.rows`);
* ``score_seconds``: median time to score one random user against every item from the propagated tables
  (a dot product with each item plus the item bias), the propagation itself done beforehand, as a
  deployment would.

Each time is the median of :data:`REPEATS` timed repetitions after one untimed warm-up, synchronised
on CUDA so that it measures the work rather than its launch.
"""
from __future__ import annotations

import statistics
import time

import torch

ROW_BATCH = 4096
REPEATS = 11


def median_seconds(work, device: torch.device) -> float:
    """Median wall time of ``work()`` over :data:`REPEATS` runs after a warm-up."""
    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    work()
    synchronize()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@torch.no_grad()
def inference_profile(trainer, seed: int = 0) -> dict:
    """The profile of ``trainer``'s module as it stands (after :meth:`Trainer.fit`, the reported checkpoint)."""
    module, device = trainer.module, trainer.device
    users, items, bias = trainer.propagated_tables()
    generator = torch.Generator().manual_seed(seed)
    entities = torch.randint(module.n_entities, (ROW_BATCH,), generator=generator).to(device)
    user = int(torch.randint(module.n_users, (1,), generator=generator))
    stored = module.stored_state().component_bytes()
    bias_bytes = 0 if bias is None else bias.numel() * bias.element_size()

    def score():
        scores = items @ users[user]
        return scores if bias is None else scores + bias

    was_training = module.training
    module.eval()
    rows_seconds = median_seconds(lambda: module.rows(entities), device)
    module.train(was_training)
    return {"bytes": {**stored, "bias": bias_bytes}, "stored_bytes": sum(stored.values()),
            "rows_seconds": rows_seconds, "rows_batch": ROW_BATCH, "score_seconds": median_seconds(score, device),
            "score_items": int(items.shape[0]), "device": str(device)}
