"""Equal-effort tuning (``tune``, docs/protocol.md §10.12): declared search ranges, deterministic trials with
trial 0 the defaults, successive halving that reads validation values only, the same command twice training
nothing, an interrupted study resuming to the same result, failed trials kept failed, and retrained records and
the manifest naming their study."""
import json
import math

import pytest

from lwbench import cli
from lwbench.config import TRAINER_SEARCH, ConfigError, trainer_options
from lwbench.options import TO_BUDGET, Option, integers, log_uniform, one_of, uniform
from lwbench.plugin import BuildContext, Method
from lwbench.records import load_records, read_manifests
from lwbench.registry import get_method, method_names, register
from lwbench.studies.tuned import manifest_name, read_study, study_path, trials_folder
from lwbench.training.trainer import DivergedError, Trainer
from lwbench.tuning.space import bracket_space, draw_trials, searchable
from lwbench.tuning.study import StudySettings, promote, validation_value

STUDY = "toy-study"


def tune_args(toy_dir, out, *extra, methods="ud,qr", seeds="2024,2025", sets=("ud.dim=8", "qr.dim=8"), trials=4):
    """A study on the toy graph: 4 trials, eta 2, rungs of 1 and 2 epochs, full runs of 4 epochs, in this process."""
    sets = [*sets, "trainer.batch_size=1024", "trainer.eval_every=1", "trainer.checkpoint_seconds=0"]
    return ["tune", "--dataset", str(toy_dir), "--methods", methods, *(a for s in sets for a in ("--set", s)),
            "--epochs", "4", "--trials", str(trials), "--eta", "2", "--rungs", "1,2", "--seeds", seeds,
            "--study", STUDY, "--jobs", "1", "--threads", "1", "--out", str(out), "--no-progress", "-q", *extra]


def without_dates(study: dict) -> dict:
    return {k: v for k, v in study.items() if k != "written_at"}


def outcome(study: dict) -> dict:
    """What a study decided and measured, without timings."""
    return {key: {"trials": [t["settings"] for t in b["trials"]],
                  "rungs": [(r["max_epochs"], r["run"], r["valid"], r["promoted"]) for r in b["rungs"]],
                  "chosen": b["chosen"]["trial"], "valid": b["chosen"]["valid"],
                  "retrained": [r["run_id"] for r in b["retrained"]]}
            for key, b in study["brackets"].items()}


def count_fits(monkeypatch):
    fits = []
    original = Trainer.fit

    def counting(self):
        fits.append(self.label)
        return original(self)

    monkeypatch.setattr(Trainer, "fit", counting)
    return fits


@pytest.fixture(scope="module")
def study_out(toy_dir, tmp_path_factory):
    """The toy study, run once for the module."""
    out = tmp_path_factory.mktemp("tuned")
    assert cli.main(tune_args(toy_dir, out)) == 0
    return out


# --- declarations and draws -------------------------------------------------------------------------------

def test_search_ranges_are_checked_where_options_are_declared():
    with pytest.raises(ValueError, match="sized to the budget .* never searched"):
        Option(0, min=1, special=TO_BUDGET, search=integers(1, 8))
    with pytest.raises(ValueError, match="at most 1"):
        Option(0.5, min=0, max=1, search=uniform(0.5, 2.0))
    with pytest.raises(ValueError, match="one of a, b"):
        Option("a", choices=("a", "b"), search=one_of("a", "c"))
    with pytest.raises(ValueError, match="expects an integer"):
        Option(4, min=1, search=uniform(0.5, 2.5))
    with pytest.raises(ValueError, match="low > 0"):
        log_uniform(0, 1)
    with pytest.raises(ValueError, match="low < high"):
        uniform(2, 1)


def test_the_shared_trainer_space_and_every_declared_method_space_are_valid():
    options = trainer_options()
    assert set(TRAINER_SEARCH) == {"lr", "l2_factor"}
    for name, search in TRAINER_SEARCH.items():
        assert search.low < options[name].default < search.high and search.log
    for name in method_names():
        method = get_method(name)
        for key, option in searchable(method).items():
            assert option.special != TO_BUDGET, key
            owner = key.split(".")[0]
            assert owner in ("trainer", name)
    assert set(searchable(get_method("ud"))) == {"trainer.lr", "trainer.l2_factor"}   # dim is the model, not a knob
    assert "qr.combine" in searchable(get_method("qr")) and "qr.buckets" not in searchable(get_method("qr"))


class Example:
    name = "example"
    options = {"rate": Option(0.5, min=0, max=1, search=uniform(0.1, 0.9)),
               "width": Option(4, min=1, search=integers(2, 64, log=True)),
               "mode": Option("a", choices=("a", "b", "c"), search=one_of("a", "b", "c")),
               "rows": Option(0, min=1, special=TO_BUDGET)}


def test_trials_are_deterministic_within_their_ranges_and_trial_0_is_the_defaults():
    space = bracket_space(Example, {})
    assert list(space) == ["example.mode", "example.rate", "example.width", "trainer.l2_factor", "trainer.lr"]
    defaults = {"example.mode": "a", "example.rate": 0.5, "example.width": 4, "trainer.l2_factor": 5.0,
                "trainer.lr": 1e-3}
    trials = draw_trials(space, 40, "0/toy/example/500buckets/table3", defaults)
    assert trials[0] == {} and len(trials) == 40
    for settings in trials[1:]:
        assert 0.1 <= settings["example.rate"] <= 0.9
        assert isinstance(settings["example.width"], int) and 2 <= settings["example.width"] <= 64
        assert settings["example.mode"] in ("a", "b", "c")
        assert 2e-4 <= settings["trainer.lr"] <= 1e-2 and 0.5 <= settings["trainer.l2_factor"] <= 20
    assert len({tuple(s.values()) for s in trials[1:]}) == 39                       # no trial repeats another
    assert draw_trials(space, 40, "0/toy/example/500buckets/table3", defaults) == trials   # same key, same trials
    assert draw_trials(space, 5, "0/toy/example/500buckets/table3", defaults) == trials[:5]  # trial k ignores n
    assert draw_trials(space, 5, "1/toy/example/500buckets/table3", defaults) != trials[:5]  # the seed keys them
    # a fixed option is not searched; a finite space is enumerated, defaults excluded, and may run out
    small = bracket_space(Example, {"trainer": {"lr": 1e-3}}, ["example.mode"])
    assert list(small) == ["example.mode"]
    assert sorted(s["example.mode"] for s in draw_trials(small, 3, "k", defaults)[1:]) == ["b", "c"]
    with pytest.raises(ConfigError, match="holds 2 configurations besides the defaults, fewer than the 3 trials"):
        draw_trials(small, 4, "k", defaults)
    with pytest.raises(ConfigError, match="fixed by --set"):
        bracket_space(Example, {"trainer": {"lr": 1e-3}}, ["trainer.lr"])


def test_successive_halving_schedules_and_bad_settings():
    assert StudySettings("s", trials=8, eta=3, rungs=(10, 30)).schedule() == [(10, 8), (30, 3), (None, 1)]
    assert StudySettings("s", trials=27, eta=3, rungs=(5, 15, 45)).schedule() == [(5, 27), (15, 9), (45, 3), (None, 1)]
    assert StudySettings("s", trials=3, eta=3, rungs=(10, 30)).schedule() == [(10, 3), (None, 1)]  # 30 stops nobody
    assert StudySettings("s", trials=1).schedule() == [(None, 1)]
    assert StudySettings("s", trials=4, rungs=()).schedule() == [(None, 4)]
    for bad, message in [(dict(trials=0), "--trials must be at least 1"), (dict(eta=1), "--eta must be at least 2"),
                         (dict(rungs=(30, 10)), "--rungs must be increasing"), (dict(name="a/b"), "a study name")]:
        with pytest.raises(ConfigError, match=message):
            StudySettings(**{"name": "s", **bad})


class Untouchable(dict):
    """Test metrics that fail the test if anything reads them."""

    def __getitem__(self, key):
        raise AssertionError("selection read a test metric")

    def get(self, *args):
        raise AssertionError("selection read a test metric")


def test_promotion_reads_validation_values_only():
    valid = {0: 0.10, 1: 0.30, 2: 0.20, 3: 0.30, 4: math.nan}
    records = {t: {"metrics": {"valid": {"ndcg@5": v, "recall@5": 1 - v}, "test": Untouchable()}} for t, v in valid.items()}
    values = {t: validation_value(record, "ndcg@5") for t, record in records.items()}
    values[5] = None                                            # a failed trial
    assert promote(values, 2) == [1, 3]                         # ties go to the lower trial index
    assert promote(values, 10) == [1, 3, 2, 0]                  # failed and NaN trials never go on
    assert promote({}, 1) == []


@pytest.mark.parametrize("full, chosen", [({0: 0.09, 1: 0.07}, 0), ({0: 0.09, 1: 0.10}, 1)])
def test_the_defaults_run_in_full_even_where_the_short_rungs_drop_them(full, chosen, tmp_path, monkeypatch):
    """Short rungs favour fast learners: here the defaults are last at 10 epochs. They still join the full rung
    (beside the promoted trial), and the better of the two full runs on validation is chosen."""
    from lwbench.tuning import study as module
    valid = {10: {0: 0.01, 1: 0.05, 2: 0.04, 3: 0.03}, 30: {1: 0.06, 2: 0.05}, None: full}

    def fake_rung(brackets, active, cap, index, n_rungs, options, request):
        for bracket in brackets:
            for trial in active[bracket.key]:
                bracket.results.setdefault(trial, []).append({"max_epochs": cap, "status": "done",
                                                              "valid": valid[cap][trial]})

    monkeypatch.setattr(module, "run_rung", fake_rung)
    monkeypatch.setattr(module, "write_study", lambda *args, **kwargs: None)
    bracket = module.Bracket(key="d/m/b", cell=None, label="m", dataset="d", full_epochs=40, metric="ndcg@5",
                             space={}, defaults={}, trials=[{}, {}, {}, {}])
    settings = StudySettings("s", trials=4, eta=2, rungs=(10, 30))
    module.run_study([bracket], module.TuneOptions(settings=settings, out=tmp_path), request=None)
    assert [r["run"] for r in bracket.rungs] == [[0, 1, 2, 3], [1, 2], [1, 0]]
    assert [r["defaults_added"] for r in bracket.rungs] == [False, True, False]
    assert bracket.chosen == chosen and bracket.status == "done"


def test_defaults_that_failed_do_not_join_the_full_rung():
    from lwbench.tuning.study import Bracket, defaults_join
    bracket = Bracket(key="k", cell=None, label="m", dataset="d", full_epochs=40, metric="ndcg@5", space={},
                      defaults={}, trials=[{}, {}])
    bracket.results = {0: [{"status": "failed", "valid": None}], 1: [{"status": "done", "valid": 0.1}]}
    assert not defaults_join(bracket, [1])
    bracket.results[0] = [{"status": "done", "valid": 0.01}]
    assert defaults_join(bracket, [1]) and not defaults_join(bracket, [0, 1])


# --- the study through the command line -------------------------------------------------------------------

def test_the_same_command_twice_gives_the_same_trials_and_trains_nothing(study_out, toy_dir, monkeypatch):
    first = read_study(study_out, STUDY)
    fits = count_fits(monkeypatch)
    assert cli.main(tune_args(toy_dir, study_out)) == 0
    assert fits == []
    assert without_dates(read_study(study_out, STUDY)) == without_dates(first)
    qr = first["brackets"]["toy/qr/500buckets"]
    full = 1 + qr["rungs"][1]["defaults_added"]                  # the defaults always run in full
    assert [r["trials"] for r in qr["rungs"]] == [4, 2, full] and [r["max_epochs"] for r in qr["rungs"]] == [1, 2, None]
    assert qr["trials"][0]["settings"] == {} and qr["defaults"]["trainer.lr"] == 1e-3
    for earlier, later in zip(qr["rungs"], qr["rungs"][1:]):     # a rung runs exactly who the previous promoted
        assert later["run"] == earlier["promoted"]
    best = max(qr["rungs"][0]["valid"].items(), key=lambda item: item[1])
    assert int(best[0]) in qr["rungs"][0]["promoted"]
    trials = load_records(trials_folder(study_out, STUDY))
    assert {r["config"]["trainer"]["max_epochs"] for r in trials} == {1, 2, 4}
    assert qr["cost"]["runs"] == 6 + full and qr["cost"]["epochs"] == 4 * 1 + 2 * 2 + 4 * full
    assert qr["cost"]["copied"] == 0 and qr["cost"]["train_seconds"] > 0   # no untuned table to copy from


def test_retrained_records_and_the_manifest_name_the_study(study_out, capsys):
    records = load_records(study_out)
    assert len(records) == 4                                    # 2 methods x 2 seeds; the trials stay apart
    study = read_study(study_out, STUDY)
    for record in records:
        bracket = study["brackets"][f"toy/{record['label'].split('@')[0]}/500buckets"]
        assert record["config"]["tuning"] == {"study": STUDY, "trial": bracket["chosen"]["trial"]}
        assert record["label"].endswith(f"@{STUDY}") and f"@{STUDY}-s" in record["run_id"]
        assert record["config"]["trainer"]["max_epochs"] == 4
        for name, value in bracket["chosen"]["settings"].items():
            owner, option = name.split(".")
            held = record["config"]["trainer"] if owner == "trainer" else record["config"]["method"]["options"]
            assert held[option] == value
    seed_2024 = [r for r in records if r["seed"] == 2024]         # the chosen trial's full run, copied
    trial_ids = {r["run_id"] for r in load_records(trials_folder(study_out, STUDY))}
    assert {r["run_id"] for r in seed_2024} <= trial_ids
    assert len(seed_2024) == 2 and all(r["adopted_from"]["run_id"] == r["run_id"] for r in seed_2024)   # the study's
    assert not any("adopted_from" in r for r in records if r["seed"] != 2024)
    manifest = read_manifests(study_out)[manifest_name(STUDY)]
    assert manifest["target"] == "tuned" and manifest["study"] == STUDY
    assert {row["label"] for row in manifest["rows"]} == {"ud-8", "qr"}
    assert {row["run_id"] for row in manifest["rows"]} == {r["run_id"] for r in records}
    capsys.readouterr()
    assert cli.main(["report", "--out", str(study_out), "--figures", str(study_out / "figures")]) == 0
    shown = capsys.readouterr().out
    assert f"Methods tuned by study {STUDY}" in shown and f"What study {STUDY} chose" in shown
    settings = (study_out / f"{manifest_name(STUDY)}-settings.md").read_text()
    assert "| toy | ud-8 | – |" in settings and "| toy | qr | 500buckets |" in settings   # UD ignores the budget
    table = (study_out / f"{manifest_name(STUDY)}.md").read_text()      # a comparison table, as everywhere
    assert "| budget used |" in table and "Bold: the best row of its dataset and budget" in table


def test_test_metrics_never_change_what_is_promoted_or_chosen(study_out, toy_dir, tmp_path, monkeypatch):
    """The study again over its own trial records with every test metric turned upside down: same promotions,
    same choice, nothing trained."""
    import shutil
    out = tmp_path / "out"
    shutil.copytree(trials_folder(study_out, STUDY), trials_folder(out, STUDY))
    for path in (trials_folder(out, STUDY) / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        for block in [record["metrics"], *record["checkpoints"].values()]:
            block["test"] = {metric: 1.0 - value for metric, value in block["test"].items()}
        path.write_text(json.dumps(record))
    fits = count_fits(monkeypatch)
    assert cli.main(tune_args(toy_dir, out, seeds="2024")) == 0
    assert fits == []
    reference, again = outcome(read_study(study_out, STUDY)), outcome(read_study(out, STUDY))
    for key in reference:
        assert {k: v for k, v in again[key].items() if k != "retrained"} == \
            {k: v for k, v in reference[key].items() if k != "retrained"}


def test_an_interrupted_study_resumes_to_the_same_result(study_out, toy_dir, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"
    original, epochs = Trainer.train_epoch, {"n": 0}

    def killed(self, *args, **kwargs):
        epochs["n"] += 1
        if epochs["n"] > 11:        # rung 1 trains 8 epochs, rung 2 runs of 2: this stops its second run half-way
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", killed)
    assert cli.main(tune_args(toy_dir, out)) == 130   # Ctrl-C: one line, exit status 130 (cli.main)
    assert not read_study(out, STUDY)["finished"] and not load_records(out)
    assert list((trials_folder(out, STUDY) / "work").glob("*/last.pt"))   # a run stopped half-way
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert cli.main(tune_args(toy_dir, out)) == 0
    assert outcome(read_study(out, STUDY)) == outcome(read_study(study_out, STUDY))
    metrics = {r["run_id"]: (r["metrics"], r["epochs_run"]) for r in load_records(out)}
    assert metrics == {r["run_id"]: (r["metrics"], r["epochs_run"]) for r in load_records(study_out)}


@register
class Explodes(Method):
    """UD whose build fails when ``explode`` is set: a trial that fails (diverges, unless ``error`` is changed)."""
    name = "test-tune-explodes"
    budgeted = False
    error = DivergedError
    options = {"dim": Option(8, min=1), "init_std": Option(0.1, above=0),
               "explode": Option(False, search=one_of(False, True))}

    def planned_count(self, options, stats):
        return get_method("ud").planned_count(options, stats)

    def build(self, ctx: BuildContext):
        if ctx.options["explode"]:
            raise self.error("exploded")
        return get_method("ud").build(ctx)


def test_a_failed_trial_is_never_chosen_and_stays_failed(toy_dir, tmp_path, monkeypatch):
    args = tune_args(toy_dir, tmp_path, "--space", "test-tune-explodes.explode", "--rungs", "none",
                     methods="test-tune-explodes", seeds="2024", sets=(), trials=2)
    assert cli.main(args) == 0
    bracket = next(iter(read_study(tmp_path, STUDY)["brackets"].values()))
    assert [t["settings"] for t in bracket["trials"]] == [{}, {"test-tune-explodes.explode": True}]
    assert bracket["trials"][1]["rungs"][0]["status"] == "failed" and bracket["chosen"]["trial"] == 0
    fits = count_fits(monkeypatch)
    assert cli.main(args) == 0
    assert fits == []                                            # not retried without --retry-failed


def test_a_trial_that_failed_without_diverging_is_trained_again(toy_dir, tmp_path, monkeypatch):
    """An out-of-memory error, a full disk or a bug fixed since is no property of the configuration: only a
    divergence is kept failed on a rerun; the failure file says which error it was."""
    monkeypatch.setattr(Explodes, "error", RuntimeError)   # e.g. CUDA out of memory
    args = tune_args(toy_dir, tmp_path, "--space", "test-tune-explodes.explode", "--rungs", "none",
                     methods="test-tune-explodes", seeds="2024", sets=(), trials=2)
    assert cli.main(args) == 0
    bracket = next(iter(read_study(tmp_path, STUDY)["brackets"].values()))
    failed = bracket["trials"][1]["rungs"][0]
    assert failed["status"] == "failed"
    failure = json.loads((trials_folder(tmp_path, STUDY) / "runs" / f"{failed['run_id']}.failed.json").read_text())
    assert failure["error_type"] == "RuntimeError"
    fits = count_fits(monkeypatch)
    assert cli.main(args) == 0
    assert fits == ["test-tune-explodes@toy-study"]               # the failed trial, trained again


@pytest.mark.parametrize("extra, message", [
    (["--methods", "nosuch"], "nosuch"),
    (["--trials", "0"], "--trials must be at least 1"),
    (["--space", "ud.dim"], "declares no search range"),
    (["--space", "trainer.lr", "--set", "trainer.lr=0.002"], "fixed by --set"),
    (["--study", "a/b"], "a study name"),
    (["--rungs", "5,x"], "--rungs"),
    (["--target", "table3", "--budget", "1%"], "--budget does not apply with --target"),
    (["--target", "tuned"], "--target tuned is what tune writes"),
])
def test_bad_input_is_a_one_line_error(extra, message, toy_dir, tmp_path, capsys):
    assert cli.main(["tune", "--dataset", str(toy_dir), "--out", str(tmp_path), "--plan", *extra]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_a_target_is_tuned_cell_by_cell(toy_dir, tmp_path, capsys):
    assert cli.main(["tune", "--target", "table3", "--methods", "ud", "--dataset", str(toy_dir), "--trials", "3",
                     "--out", str(tmp_path), "--plan"]) == 0
    shown = capsys.readouterr().out
    assert "study table3-toy" in shown and "toy/ud-128/500buckets" in shown and "toy/ud-64/500buckets" in shown
    ud128, ud64 = (shown.split(f"toy/{label}/500buckets")[1] for label in ("ud-128", "ud-64"))
    assert ud128.split("\n")[1:4] == ud64.split("\n")[1:4]       # one draw per method: the same trials
    assert not study_path(tmp_path, "table3-toy").exists()       # --plan writes nothing


def test_the_defaults_reuse_the_untuned_runs_of_the_same_configuration(toy_dir, tmp_path, monkeypatch, capsys):
    """Trial 0 at the full rung is the untuned protocol's run: where the untuned table has it, a study copies its
    record (naming it in ``adopted_from``) instead of training it again, and the copy is a record of the study."""
    sets = ["ud.dim=8", "trainer.batch_size=1024", "trainer.eval_every=1", "trainer.checkpoint_seconds=0"]
    assert cli.main(["grid", "--dataset", str(toy_dir), "--methods", "ud", *(a for s in sets for a in ("--set", s)),
                     "--epochs", "4", "--seeds", "2024,2025", "--jobs", "1", "--threads", "1", "--out", str(tmp_path),
                     "--no-progress", "-q"]) == 0
    untuned = {r["seed"]: r for r in load_records(tmp_path)}
    fits = count_fits(monkeypatch)
    args = tune_args(toy_dir, tmp_path, "--rungs", "none", methods="ud", sets=("ud.dim=8",), trials=1)
    assert cli.main(args) == 0
    assert fits == []                                             # nothing trained: every run was the untuned one
    tuned = [r for r in load_records(tmp_path) if "tuning" in r["config"]]
    assert sorted(r["seed"] for r in tuned) == [2024, 2025]
    for record in tuned:
        twin = untuned[record["seed"]]
        assert record["adopted_from"]["run_id"] == twin["run_id"] and record["run_id"] != twin["run_id"]
        assert record["config"] == {**twin["config"], "tuning": {"study": STUDY, "trial": 0}}
        assert record["metrics"] == twin["metrics"] and record["label"] == f"{twin['label']}@{STUDY}"
    (trial,) = load_records(trials_folder(tmp_path, STUDY))
    assert trial["seed"] == 2024 and trial["adopted_from"]["run_id"] == untuned[2024]["run_id"]
    # the copied run was trained, and is counted, by the untuned table: the study itself cost nothing
    (bracket,) = read_study(tmp_path, STUDY)["brackets"].values()
    assert bracket["cost"] == {"runs": 0, "copied": 1, "epochs": 0, "train_seconds": 0, "eval_seconds": 0}
    # a reader asks whether tuning moved the method: compare takes the study's label like any other
    capsys.readouterr()
    assert cli.main(["compare", f"ud-8@{STUDY}", "ud-8", "--out", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert f"ud-8@{STUDY} against ud-8" in shown and "Δ [95% CI]" in shown


def test_a_changed_setting_never_reuses_an_untuned_run(toy_dir, tmp_path, monkeypatch):
    sets = ["ud.dim=8", "trainer.batch_size=1024", "trainer.eval_every=1", "trainer.checkpoint_seconds=0"]
    assert cli.main(["grid", "--dataset", str(toy_dir), "--methods", "ud", *(a for s in sets for a in ("--set", s)),
                     "--epochs", "4", "--seeds", "2024", "--jobs", "1", "--threads", "1", "--out", str(tmp_path),
                     "--no-progress", "-q"]) == 0
    fits = count_fits(monkeypatch)
    args = tune_args(toy_dir, tmp_path, "--rungs", "none", "--set", "trainer.l2_factor=4", methods="ud",
                     sets=("ud.dim=8",), seeds="2024", trials=1)
    assert cli.main(args) == 0
    assert len(fits) == 1
    (record,) = [r for r in load_records(tmp_path) if "tuning" in r["config"]]
    assert record["adopted_from"]["run_id"] == record["run_id"]   # the chosen trial's own run, not the untuned one
    assert "chosen trial" in record["adopted_from"]["why"]


def test_the_study_file_and_manifest_merges_of_two_commands_at_once_keep_both(tmp_path, monkeypatch):
    """Two tunes of one study (different cells) writing at the same moment: each read-merge-write holds a lock,
    so neither loses the other's bracket or manifest rows."""
    import threading
    import time
    from types import SimpleNamespace

    from lwbench.tuning import study as study_module
    monkeypatch.setattr(study_module, "bracket_entry", lambda bracket, settings, retrained: {"key": bracket.key})
    for name in ("read_study", "read_manifests"):
        original = getattr(study_module, name)

        def slow(*args, original=original):
            found = original(*args)
            time.sleep(0.3)                # the other command reads meanwhile (without a lock, the same file)
            return found
        monkeypatch.setattr(study_module, name, slow)
    options = study_module.TuneOptions(settings=StudySettings(STUDY), out=tmp_path)

    def command(key):
        study_module.write_study([SimpleNamespace(key=key)], options, final=False)
        row = {"bracket": key, "run_id": f"run-{key}", "dataset": "toy", "method": "ud", "label": key,
               "budget": "500buckets", "seed": 2024, "coords": {}}
        study_module.write_study_manifest(options, [row], {key})
    threads = [threading.Thread(target=command, args=(key,)) for key in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(read_study(tmp_path, STUDY)["brackets"]) == ["a", "b"]
    manifest = json.loads((tmp_path / "grids" / f"{manifest_name(STUDY)}.json").read_text())
    assert sorted(row["bracket"] for row in manifest["rows"]) == ["a", "b"]


def test_a_rerun_reads_each_trial_record_once(study_out, toy_dir, tmp_path, monkeypatch):
    """A finished study run again finds every trial's record with one read: the rung's count, the copies of
    untuned runs and the execution share what was read (they used to read each record three times)."""
    import shutil
    from collections import Counter

    from lwbench import records as records_module
    out = tmp_path / "copy"
    shutil.copytree(study_out, out)
    reads = Counter()
    original = records_module.read_record

    def counting(path):
        reads[str(path)] += 1
        return original(path)
    monkeypatch.setattr(records_module, "read_record", counting)
    assert cli.main(tune_args(toy_dir, out)) == 0
    trials = str(trials_folder(out, STUDY) / "runs")
    per_trial = [n for path, n in reads.items() if path.startswith(trials)]
    study = read_study(out, STUDY)
    full = sum(b["rungs"][-1]["trials"] for b in study["brackets"].values())   # 1, or 2 with the defaults added
    assert len(per_trial) == 2 * (4 + 2) + full and set(per_trial) == {1}      # each run's record read once
