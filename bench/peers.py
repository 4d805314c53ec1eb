#!/usr/bin/env python3
"""lwbench's UD-128 (plain LightGCN, full embedding table) against two peer implementations of LightGCN,
RecBole 1.2.1 and PyTorch Geometric (``torch_geometric.nn.models.LightGCN``). A benchmark, not a test.

Why: UD-128 is the reference every compressed method is measured against, so its own trainer should cost
no more than, and reach the accuracy of, the LightGCN implementations people already use.

    pip install -e '.[peers]'
    python bench/peers.py --dataset lastfm --data-dir ../shared/datasets              # timing
    python bench/peers.py --dataset lastfm --data-dir ../shared/datasets --rounds 0 --accuracy

Timing (``--rounds N``, default 3, after one untimed warm-up round): round r times one training epoch of
lwbench, RecBole and PyG in turn, then one full-ranking evaluation of each. CPU seconds
(``time.process_time``) and wall seconds are recorded; the table shows medians over rounds. Run it with one
torch thread (set here) so that CPU seconds measure work, not contention.

* Same geometry for all three: dimension, layers, learning rate, batch size, negatives and L2 strength are
  read from lwbench's trainer settings for UD (dim 128, 3 layers, Adam lr 1e-3, 8192 triplets a step, an
  epoch of 5 x n_train triplets, 45 steps on lastfm). A step is: propagate the whole normalized graph, BPR
  + L2 on the batch's layer-0 rows, backward, Adam step.
* Same triplets: every round reseeds one generator, and each library's epoch draws its (user, positive,
  negative) tensors from lwbench's own sampler (``trainer.sampler.epoch``) with it, so all three train on
  identical batches and sampling is *included, and equal*, in every epoch time; the "sampling" row shows it
  alone. RecBole gets the tensors mapped to its internal ids in an ``Interaction`` and runs
  ``calculate_loss``; PyG gets ``edge_label_index`` and ``recommendation_loss``, as in its lightgcn example.
* Matched L2: lwbench adds ``l2 * (|E0[u]|^2 + |E0[i]|^2 + |E0[j]|^2) / B`` (``l2 = l2_factor * 1e-4``);
  RecBole gets ``require_pow=True`` and ``reg_weight = 2 * l2`` (its EmbLoss halves the sum); PyG gets
  ``lambda_reg = l2`` and ``node_id`` with repeats (its BPRLoss takes the squared norm of the rows given).
* Evaluation, over lwbench's test users: lwbench is timed by ``bench/speed.py``'s ``timed_evaluations``
  (propagate, score, mask training items, top-50, all metrics); RecBole by ``full_sort_predict`` with its
  cached tables cleared first, PyG by ``get_embedding`` and a matrix product, each followed by the same
  masking of training items and top-20. lwbench's share thus includes a top-50 and the metrics the peers
  skip.

Accuracy (``--accuracy``): RecBole's own ``Trainer`` trains its LightGCN on lwbench's train split with its own
sampler (5 uniform negatives per training pair an epoch, batch 8190 = 1638 pairs x 5) and early stopping
matched to lwbench's (NDCG@5 on lwbench's validation split every ``eval_every`` epochs, stop at the
``patience_fixed``-th evaluation without improvement, ``--max-epochs`` caps it). The best checkpoint's
propagated tables are mapped back to lwbench's ids and scored by lwbench's ``Evaluator`` on lwbench's test
split, beside the test metrics of lwbench's UD-128 record. RecBole's own test metrics are kept too; they
are higher because RecBole also masks validation items when ranking for the test split (lwbench's
evaluator masking train and validation items reproduces them; on validation the two agree as they are).

Known mismatches:
* lwbench's UD-128 has an item bias and clips gradients by value (3.0); the peers have neither (lwbench pays).
* lwbench initializes N(0, 0.1^2); both peers use Xavier-uniform (their defaults, kept for accuracy).
* RecBole's tables carry one padding row each (id 0, no edges), masked out of its rankings.
* PyG normalizes the graph (``gcn_norm``) in every layer of every forward pass, as its ``LGConv`` does by
  default; lwbench and RecBole normalize once. That cost is PyG's as it is used.
* lwbench's trainer switches on ``torch.use_deterministic_algorithms`` process-wide (its default); the peers
  run with torch's default (off), switched around each of their calls.
* RecBole's sampler in ``--accuracy`` walks every training pair once an epoch; lwbench draws users uniformly
  with replacement (docs/protocol.md §3.1), and its 5 negatives per pair are distinct.

Compatibility shims for RecBole 1.2.1 (which predates NumPy 2 and SciPy 1.12), applied in this process
only: the NumPy aliases its ``Config`` re-exports (``np.float_``, ``np.complex_``, ``np.unicode_``) and
``scipy.sparse.dok_matrix._update`` (its graph build calls it; SciPy's public ``update`` does the same).
RecBole's checkpoint is read back with ``weights_only=False`` (it pickles its ``Config``). RecBole's
``quick_start`` (which imports Ray) is not used.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from unittest import mock

import numpy as np
import scipy.sparse as sp
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.model.general_recommender.lightgcn import LightGCN as RecBoleLightGCN
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import init_seed
from speed import prepared_trainer, timed_epochs, timed_evaluations
from torch_geometric.nn.models import LightGCN as PygLightGCN

from lwbench.data.cards import load_dataset
from lwbench.environment import code_version, device_name, library_versions
from lwbench.evaluate import Evaluator
from lwbench.kernels.csr import DeviceCSR
from lwbench.kernels.graph import bipartite_edges

LIBRARIES = ("lwbench", "recbole", "pyg")
TOP_K = 20


def recbole_compat() -> None:
    """Give RecBole 1.2.1 the names NumPy 2 and SciPy >= 1.12 removed (see the module docstring)."""
    for name, value in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if name not in np.__dict__:
            setattr(np, name, value)
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = sp.dok_matrix.update


@contextlib.contextmanager
def deterministic(flag: bool):
    """Run a block with ``torch.use_deterministic_algorithms(flag)``, restoring the previous setting."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(flag, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def top_k(scores: torch.Tensor, history: DeviceCSR, rows: torch.Tensor) -> torch.Tensor:
    """Mask each row's training items (``history`` in the scores' id space), then take the top-20 items."""
    position, items = history.gather_rows(rows)
    scores[position, items] = -torch.inf
    return torch.topk(scores, TOP_K, dim=1).indices


def recbole_setup(data, folder: Path, lw: dict, extra: dict):
    """RecBole's Config and Dataset of lwbench's train/valid/test splits, written to ``folder`` as atomic
    ``.inter`` files (``dataset.build()`` returns the three splits in that order)."""
    recbole_compat()
    (folder / data.name).mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        pairs = getattr(data, split).tocoo()
        with open(folder / data.name / f"{data.name}.{split}.inter", "w") as handle:
            handle.write("user_id:token\titem_id:token\n")
            handle.writelines(f"{u}\t{i}\n" for u, i in zip(pairs.row, pairs.col))
    with mock.patch.object(sys, "argv", sys.argv[:1]):   # Config would read --key=value options from it
        config = Config(model="LightGCN", dataset=data.name, config_dict={
            "data_path": str(folder), "benchmark_filename": ["train", "valid", "test"], "use_gpu": False,
            "checkpoint_dir": str(folder / "saved"), "show_progress": False, "seed": 2024,
            "embedding_size": lw["dim"], "n_layers": lw["layers"], "learning_rate": lw["lr"],
            "require_pow": True, "reg_weight": 2 * lw["l2"], "train_batch_size": lw["batch_size"],
            "train_neg_sample_args": {"distribution": "uniform", "sample_num": lw["n_negatives"], "alpha": 1.0,
                                      "dynamic": False, "candidate_num": 0},
            **extra})
    dataset = create_dataset(config)
    return config, dataset


class RecBolePeer:
    def __init__(self, data, lw: dict, folder: Path):
        config, dataset = recbole_setup(data, folder, lw, {})
        train = dataset.build()[0]
        torch.manual_seed(2024)
        self.model = RecBoleLightGCN(config, train)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lw["lr"])
        self.fields = (self.model.USER_ID, self.model.ITEM_ID, self.model.NEG_ITEM_ID)
        self.user_ids, self.item_ids = recbole_ids(train, data.n_users, data.n_items)
        history = data.train.tocoo()
        self.history = DeviceCSR(sp.csr_matrix(
            (history.data, (self.user_ids[history.row].numpy(), self.item_ids[history.col].numpy())),
            shape=(train.user_num, train.item_num)))

    def step(self, users, positives, negatives) -> None:
        batch = Interaction(dict(zip(self.fields, (self.user_ids[users], self.item_ids[positives],
                                                   self.item_ids[negatives]))))
        self.optimizer.zero_grad()
        self.model.calculate_loss(batch).backward()
        self.optimizer.step()

    @torch.no_grad()
    def rank(self, users) -> torch.Tensor:
        self.model.eval()
        self.model.restore_user_e = self.model.restore_item_e = None   # so that it propagates again
        ids = self.user_ids[users]
        scores = self.model.full_sort_predict(Interaction({self.fields[0]: ids})).view(len(ids), -1)
        scores[:, 0] = -torch.inf   # the padding item
        self.model.train()
        return top_k(scores, self.history, ids)


def recbole_ids(dataset, n_users: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RecBole's internal ids of lwbench's users and items (written to its files as their decimal tokens)."""
    users = dataset.token2id(dataset.uid_field, [str(u) for u in range(n_users)])
    items = dataset.token2id(dataset.iid_field, [str(i) for i in range(n_items)])
    return torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)


class PygPeer:
    def __init__(self, data, lw: dict):
        torch.manual_seed(2024)
        self.n_users = data.n_users
        self.model = PygLightGCN(data.n_users + data.n_items, lw["dim"], lw["layers"])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lw["lr"])
        self.edge_index, _ = bipartite_edges(data.train)
        self.history = DeviceCSR(data.train)
        self.l2 = lw["l2"]

    def step(self, users, positives, negatives) -> None:
        positives, negatives = positives + self.n_users, negatives + self.n_users
        label_index = torch.stack([torch.cat([users, users]), torch.cat([positives, negatives])])
        pos_rank, neg_rank = self.model(self.edge_index, label_index).chunk(2)
        loss = self.model.recommendation_loss(pos_rank, neg_rank, node_id=torch.cat([users, positives, negatives]),
                                              lambda_reg=self.l2)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def rank(self, users) -> torch.Tensor:
        embedding = self.model.get_embedding(self.edge_index)
        return top_k(embedding[users] @ embedding[self.n_users:].T, self.history, users)


def peer_epoch(peer, sampler, generator: torch.Generator, batch_size: int) -> None:
    """One epoch of a peer on lwbench's sampler, batched as lwbench's trainer batches."""
    users, positives, negatives = sampler.epoch(generator)
    for start in range(0, len(users), batch_size):
        end = start + batch_size
        peer.step(users[start:end], positives[start:end], negatives[start:end])


def measured(fn) -> dict:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}


def lwbench_settings(trainer) -> dict:
    config = trainer.config
    return {"dim": trainer.options["dim"], "layers": config.layers, "lr": config.lr,
            "batch_size": config.batch_size, "n_negatives": config.n_negatives, "l2": config.l2_factor * 1e-4,
            "eval_every": config.eval_every, "patience": config.patience_fixed,
            "early_stop_metric": config.early_stop_metric, "max_epochs": config.max_epochs}


def timing(trainer, index: int, data, lw: dict, rounds: int, folder: Path) -> dict:
    peers = {"recbole": RecBolePeer(data, lw, folder), "pyg": PygPeer(data, lw)}
    users = trainer.evaluator.users["test"]
    generator = torch.Generator()

    def epoch(name: str, seed: int) -> None:
        if name == "lwbench":
            trainer.generator.manual_seed(seed)
            timed_epochs(trainer, index, 0)
            return
        with deterministic(False):
            peer_epoch(peers[name], trainer.sampler, generator.manual_seed(seed), lw["batch_size"])

    def evaluation(name: str) -> None:
        if name == "lwbench":
            timed_evaluations(trainer, 0)
            return
        with deterministic(False):
            peers[name].rank(users)

    records = []
    for r in range(rounds + 1):
        seed = 2024 + r
        record = {"round": r, "warm_up": r == 0,
                  "sampling": measured(lambda seed=seed: trainer.sampler.epoch(generator.manual_seed(seed)))}
        for name in LIBRARIES:
            record[f"{name}_epoch"] = measured(lambda name=name, seed=seed: epoch(name, seed))
        for name in LIBRARIES:
            record[f"{name}_eval"] = measured(lambda name=name: evaluation(name))
        records.append(record)
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: " + ", ".join(
            f"{key} {value['cpu']:.2f}" for key, value in record.items() if isinstance(value, dict)) + " CPU s",
            file=sys.stderr, flush=True)
    timed = records[1:]
    median = {key: {kind: statistics.median(rec[key][kind] for rec in timed) for kind in ("cpu", "wall")}
              for key in records[0] if isinstance(records[0][key], dict)}
    return {"rounds": records, "median": median, "eval_users": len(users),
            "steps_per_epoch": -(-lw["n_negatives"] * data.train.nnz // lw["batch_size"])}


def accuracy(data, lw: dict, max_epochs: int, record_path: Path, folder: Path) -> dict:
    """Train RecBole's LightGCN with its own Trainer, score its best checkpoint with lwbench's Evaluator."""
    metric = lw["early_stop_metric"].upper()
    config, dataset = recbole_setup(data, folder, lw, {
        "epochs": max_epochs, "eval_step": lw["eval_every"], "stopping_step": lw["patience"] - 1,
        "valid_metric": metric, "metrics": ["Recall", "NDCG"], "topk": [5, TOP_K],
        "eval_batch_size": 2**26})
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = RecBoleLightGCN(config, train_data._dataset)
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    # RecBole's Trainer opens a TensorBoard log folder in the working directory
    with contextlib.chdir(folder), deterministic(False):
        trainer = RecBoleTrainer(config, model)
        trainer.fit(train_data, valid_data, verbose=False, saved=True, show_progress=False,
                    callback_fn=lambda epoch, value: print(f"recbole epoch {epoch + 1}: valid {metric} {value:.4f}",
                                                           file=sys.stderr, flush=True))
    train_cpu, train_wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
    checkpoint = torch.load(trainer.saved_model_file, weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    own_test = trainer.evaluate(test_data, load_best_model=False)

    model.eval()
    with torch.no_grad():
        user_table, item_table = model.forward()
    user_ids, item_ids = recbole_ids(train_data._dataset, data.n_users, data.n_items)
    evaluator = Evaluator(data.train, {"valid": data.valid, "test": data.test}, ks=(5, TOP_K))
    tables = user_table[user_ids], item_table[item_ids], None
    valid = evaluator.per_user("valid", *tables).mean()
    test = evaluator.per_user("test", *tables).mean()

    lw_record = json.loads(record_path.read_text())
    reported = lw_record["checkpoints"][lw_record["reported_checkpoint"]]
    return {
        "recbole": {"best_epoch": checkpoint["epoch"] + 1, "epochs_run": len(trainer.train_loss_dict),
                    "max_epochs": max_epochs, "train_cpu_seconds": train_cpu, "train_wall_seconds": train_wall,
                    "lwbench_evaluator": {"valid": valid.to_dict(), "test": test.to_dict()},
                    "recbole_evaluator_test": dict(own_test)},
        "lwbench": {"record": str(record_path), "best_epoch": reported["epoch"], "epochs_run": lw_record["epochs_run"],
                    "train_seconds": lw_record["train_seconds"], "device_name": lw_record["device_name"],
                    "valid": reported["valid"], "test": reported["test"]},
    }


def markdown(report: dict) -> str:
    lines = []
    if "timing" in report:
        median = report["timing"]["median"]
        lines += [f"Median of {len(report['timing']['rounds']) - 1} rounds, {report['machine']}, one torch thread; "
                  f"{report['timing']['steps_per_epoch']} steps an epoch, {report['timing']['eval_users']} test users.",
                  "", "| library | epoch CPU s | epoch wall s | evaluation CPU s | evaluation wall s |",
                  "|---|---:|---:|---:|---:|"]
        for name in LIBRARIES:
            epoch, evaluation = median[f"{name}_epoch"], median[f"{name}_eval"]
            lines.append(f"| {name} | {epoch['cpu']:.2f} | {epoch['wall']:.2f} | {evaluation['cpu']:.3f} | "
                         f"{evaluation['wall']:.3f} |")
        lines.append(f"| (sampling alone, in every epoch) | {median['sampling']['cpu']:.2f} | "
                     f"{median['sampling']['wall']:.2f} | | |")
    if "accuracy" in report:
        ours, theirs = report["accuracy"]["lwbench"], report["accuracy"]["recbole"]

        def row(label: str, metrics: dict, best="", run="") -> str:
            return f"| {label} | {metrics[f'recall@{TOP_K}']:.4f} | {metrics[f'ndcg@{TOP_K}']:.4f} | {best} | {run} |"

        lines += ["", f"| model, test split | Recall@{TOP_K} | NDCG@{TOP_K} | best epoch | epochs run |",
                  "|---|---:|---:|---:|---:|",
                  row("lwbench UD-128 (its record)", ours["test"], ours["best_epoch"], ours["epochs_run"]),
                  row("RecBole LightGCN, lwbench's evaluator", theirs["lwbench_evaluator"]["test"],
                      theirs["best_epoch"], f"{theirs['epochs_run']} (cap {theirs['max_epochs']})"),
                  row("RecBole LightGCN, RecBole's evaluator", theirs["recbole_evaluator_test"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="lastfm")
    parser.add_argument("--data-dir")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up (0: no timing)")
    parser.add_argument("--accuracy", action="store_true", help="also train RecBole's LightGCN to convergence")
    parser.add_argument("--max-epochs", type=int, help="epoch cap of --accuracy (default: lwbench's max_epochs)")
    parser.add_argument("--lwbench-record", help="lwbench's UD-128 record to compare with (default: the seed-2024 "
                                                 "record under results/DATASET/runs)")
    parser.add_argument("--out", help="JSON report, updated in place (default: results/peers/DATASET.json)")
    args = parser.parse_args()
    if args.rounds < 0:
        parser.error("--rounds must be 0 or more")
    torch.set_num_threads(1)

    dataset = load_dataset(args.dataset, data_dir=args.data_dir)
    data = dataset.interactions
    out = Path(args.out or f"results/peers/{data.name}.json")
    report = json.loads(out.read_text()) if out.exists() else {}
    cpu = torch.device("cpu")
    versions = {**library_versions(), "recbole": version("recbole"), "torch_geometric": version("torch_geometric")}
    report.update({"dataset": data.name, "machine": device_name(cpu), "versions": versions,
                   "code_version": code_version(), "load_average_1m": {"start": round(os.getloadavg()[0], 2)}})
    with tempfile.TemporaryDirectory(prefix="lwbench-peers-") as scratch:
        folder = Path(scratch)
        trainer, index, _ = prepared_trainer(dataset, "ud", "500buckets", {}, cpu, folder / "lwbench")
        lw = lwbench_settings(trainer)
        report["settings"] = lw
        if args.rounds:
            report["timing"] = timing(trainer, index, data, lw, args.rounds, folder / "timing")
        if args.accuracy:
            record = (Path(args.lwbench_record) if args.lwbench_record else
                      next(Path("results", data.name, "runs").glob(f"{data.name}-ud-128-s2024-{'[0-9a-f]' * 10}.json")))
            report["accuracy"] = accuracy(data, lw, args.max_epochs or lw["max_epochs"], record,
                                          folder / "accuracy")
    report["load_average_1m"]["end"] = round(os.getloadavg()[0], 2)   # other work on the machine shows here
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print(f"\nwritten: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
