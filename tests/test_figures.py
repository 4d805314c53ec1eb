"""Figures drawn for readers: checked on the matplotlib objects (axis labels, legend texts, colours,
shared limits, the smoke-run stamp, the size), not on pixels. Records are fabricated (tests/fakes.py)."""
import numpy as np
import pytest
from fakes import fake_target
from matplotlib.container import ErrorbarContainer

from lwbench.records import points, read_manifests
from lwbench.reports import figures, targets
from lwbench.studies import budget_curve
from lwbench.studies.c2f_paper.targets import ABLATION_NAMES, C2F_COARSE_STAGE

COARSE = f"{C2F_COARSE_STAGE}/update"


def c2f_level(cell, seed, checkpoint):
    if checkpoint == COARSE:
        return 0.08
    return {"Full": 0.10, "A": 0.09, "B": 0.095, "C": 0.085, "D": 0.092}.get(cell.coords.get("case"), 0.09) \
        + 0.002 * seed


def curve_level(cell, seed, checkpoint):
    percent = float(cell.budget[:-1]) if cell.budget.endswith("%") else 4.2
    return 0.2 if cell.method == "ud" else 0.05 + 0.002 * len(cell.method) + 0.004 * percent


def built(tmp_path, name, methods, seeds, level, quick=False, **kwargs):
    """The figures a target builds from fabricated records, as matplotlib objects (plus its tables)."""
    out = tmp_path / "out"
    fake_target(out, name, ["gowalla"], methods, seeds, level, **kwargs)
    manifest = read_manifests(out)[name]
    manifest["quick"] = quick
    outputs = targets.get_target(name).build(points(out, manifest), out, manifest, "two-sided")
    return outputs


def texts(figure):
    return [t.get_text() for t in figure.texts]


def legend_texts(figure):
    return [t.get_text() for legend in figure.legends for t in legend.get_texts()] + \
        [t.get_text() for ax in figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_fig4_names_its_axes_and_cases_and_draws_across_seed_intervals(tmp_path):
    outputs = built(tmp_path, "fig4", ["c2f"], [1, 2, 3], c2f_level, checkpoints=(COARSE, "fine/update"))
    figure = outputs.figures["fig4"]
    for ax in figure.axes:
        assert ax.get_ylabel().startswith("test ") and ax.get_ylabel().split()[1].split("@")[0] in ("NDCG", "Recall")
    legend = legend_texts(figure)
    assert {figures.math_label(name) for name in ABLATION_NAMES.values()} <= set(legend) and "A" not in legend
    assert "A: random $E^{r}$ selection" in legend   # the symbol set as mathematics, as the paper writes it
    assert any("coarse stage" in text for text in legend)
    # Three seeds: every case is a marker with an error bar (the across-seed interval), none of zero length,
    # and no bar (whose length would not say its value on an axis that does not start at zero).
    points = [c for ax in figure.axes for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(points) == 4 * len(ABLATION_NAMES) and not any(ax.patches for ax in figure.axes)
    for container in points:
        (segment,) = container.lines[2][0].get_segments()
        assert segment[1][1] > segment[0][1]
    table = outputs.tables[0]
    assert "nan" not in table.to_markdown() and any("t-interval of the mean over seeds" in n for n in table.notes)


def test_fig4_tests_every_ablation_against_the_full_model(tmp_path):
    """The ablation table marks the cases not shown worse than Full C2F (not the best row: case A is built
    above Full here) and writes every test against Full to fig4-stats."""
    def level(cell, seed, checkpoint):
        if checkpoint == COARSE:
            return 0.08
        noise = 0.001 * ((seed * 7) % 3)   # seed-to-seed spread, so the across-seeds t-test is defined
        return {"Full": 0.10, "A": 0.101, "B": 0.099, "C": 0.06, "D": 0.098}[cell.coords["case"]] + noise
    outputs = built(tmp_path, "fig4", ["c2f"], [1, 2, 3], level, checkpoints=(COARSE, "fine/update"))
    table, stats_table = outputs.tables
    assert stats_table.name == "fig4-stats" and "Full C2F" in stats_table.columns
    compared = {row[2].split(" vs ")[0] for row in stats_table.rows}
    assert compared == {n for k, n in ABLATION_NAMES.items() if k != "Full"}          # every case, not Full
    assert all(" vs Full C2F, " in row[2] for row in stats_table.rows)
    cells = {row[1]: row[3:7] for row in table.rows}
    assert all(not cell.endswith("†") for cell in cells["C: no soft threshold"])        # far below Full
    assert all(cell.endswith("†") for cell in cells["A: random E^r selection"])         # above Full
    assert not any(cell.endswith("†") for cell in cells["Full C2F"])                    # the reference itself
    assert any("not significantly worse than the Full C2F row" in note for note in table.notes)


def test_fig5_tests_every_sweep_point_against_the_released_configuration(tmp_path):
    """Each point changes one factor of the released configuration: it is tested against that configuration's
    runs (the released row of the table, a dashed line in every panel), never against itself."""
    def level(cell, seed, checkpoint):
        return 0.05 if (cell.coords["factor"], cell.coords["value"]) == ("λ", 10) else 0.10   # λ = 10 far below
    # Two seeds: the across-users test decides (with three, Holm over 80 two-df tests would need a larger gap).
    outputs = built(tmp_path, "fig5", ["c2f"], [1, 2], level, checkpoints=(COARSE, "fine/update"))
    table, stats_table = outputs.tables
    assert stats_table.name == "fig5-stats" and "released" in stats_table.columns
    compared = {row[2].split(" vs ")[0] for row in stats_table.rows}
    assert len(compared) == 4 * 5 and "λ = 10" in compared and "released" not in compared
    cells = {(row[1], row[2]): row[4:8] for row in table.rows}
    assert not any(cell.endswith("†") for cell in cells[("λ", "10")])
    assert all(cell.endswith("†") for cell in cells[("λ", "3")])
    assert ("released", "–") in cells and not any(c.endswith("†") for c in cells[("released", "–")])
    legend = legend_texts(outputs.figures["fig5"])
    assert "released configuration" in legend and "one factor changed" in legend
    lam = next(ax for ax in outputs.figures["fig5"].axes if ax.get_xlabel() == "λ")
    assert [t.get_text() for t in lam.get_xticklabels()] == ["0.5", "1", "3", "5", "10"]   # every value, evenly spaced
    assert list(lam.get_xticks()) == [0, 1, 2, 3, 4]


def test_fig6_panels_of_one_metric_share_their_y_limits(tmp_path):
    outputs = built(tmp_path, "fig6", ["c2f"], [1], c2f_level, checkpoints=(COARSE, "fine/update"))
    figure = outputs.figures["fig6"]
    axes = np.array(figure.axes[:8]).reshape(2, 4)
    for column in axes.T:
        assert column[0].get_ylim() == column[1].get_ylim()
        assert column[0].get_ylabel() == column[1].get_ylabel() and column[0].get_ylabel().startswith("test ")
    table = outputs.tables[0].to_markdown()
    assert "nan" not in table and "bootstrap interval over the test users" in table
    fine = [row[3] for row in outputs.tables[0].rows if row[1].startswith("b: fixed total, after")]
    assert fine == sorted(fine, key=float) and fine[0] == "0"   # m^r = 0 first, in the natural order


def test_compared_panels_are_drawn_from_zero_not_below():
    """A one-epoch smoke run can score 0 everywhere; matplotlib then centres the axis on 0 (-0.05 to 0.05), and
    no metric is negative, so compared panels start at 0 (and keep their common top)."""
    import matplotlib.pyplot as plt
    figure, (zeros, other) = plt.subplots(1, 2)
    zeros.plot([1, 2], [0.0, 0.0])
    other.plot([1, 2], [0.01, 0.02])
    assert zeros.get_ylim()[0] < 0
    figures.share_y([zeros, other])
    assert zeros.get_ylim() == other.get_ylim() and zeros.get_ylim()[0] == 0.0 and zeros.get_ylim()[1] >= 0.02
    plt.close(figure)


def test_fig6_tests_the_fine_stage_against_its_coarse_stage_at_every_fine_count(tmp_path):
    """Panel (b)'s claim (the fine stage adds to its coarse stage) is tested at every m^r > 0 across the test
    users, with Holm over the whole table; m^r = 0 (the coarse stage alone) has nothing to test."""
    outputs = built(tmp_path, "fig6", ["c2f"], [1], c2f_level, checkpoints=(COARSE, "fine/update"))
    table, stats_table = outputs.tables
    assert stats_table.name == "fig6-stats" and "fig6-stats.md" in " ".join(table.notes)
    tested = {row[2].split(":")[0] for row in stats_table.rows}
    assert tested == {f"m^r = {fine}" for fine in (20, 40, 60, 80, 100)}
    assert {row[1] for row in stats_table.rows} == {"across users"}            # one seed: no across-seeds test
    frame = stats_table.data
    assert (frame["mean_diff"] > 0).all() and (frame["p_holm"] >= frame["pvalue"]).all()


def test_each_method_keeps_its_colour_and_marker_in_every_panel(tmp_path):
    outputs = built(tmp_path, "budget-curve", ["ud", "qr", "pep"], [1], curve_level)
    figure = outputs.figures["budget-curve"]
    assert figure.get_figwidth() * figures.DPI >= figures.MIN_WIDTH_PX
    for ax in figure.axes:
        assert ax.get_ylabel() in ("test NDCG@20", "test Recall@20") and "budget" in ax.get_xlabel()
        for container in ax.containers:
            label = container.get_label()
            line = container.lines[0]
            style = figures.method_style(label, budget_curve.METHOD_ORDER)
            assert line.get_color() == style["color"] and line.get_marker() == style["marker"]
    assert figures.method_style("QR", budget_curve.METHOD_ORDER) == figures.method_style("qr", budget_curve.METHOD_ORDER)
    # Named as Table 3 names them, in the legend and in the table.
    assert {"QR", "PEP", "UD-128 (unbudgeted)", "UD-64 (unbudgeted)"} <= set(legend_texts(figure))
    table = outputs.tables[0]
    assert {row[table.columns.index("method")] for row in table.rows} == {"QR", "PEP", "UD-128", "UD-64"}


def test_the_budget_curve_table_carries_the_intervals_its_figure_draws(tmp_path):
    """A reader who redraws the figure from budget-curve.csv finds each point's error bar there (one seed: the
    bootstrap interval over the point's test users)."""
    outputs = built(tmp_path, "budget-curve", ["ud", "qr"], [1], curve_level)
    data = outputs.tables[0].data
    rows = data[data["method"] == "QR"]
    assert len(rows) == 5 and (rows["ndcg@20:ci"] == "users").all()
    rows = rows[rows["budget (%)"] != "nan"]   # fabricated records: the 500-bucket point has no axis position
    assert (rows["ndcg@20:ci_low"] < rows["ndcg@20:mean"]).all() and (rows["ndcg@20:mean"] < rows["ndcg@20:ci_high"]).all()
    ax = outputs.figures["budget-curve"].axes[0]   # test NDCG@20
    assert ax.get_ylabel() == "test NDCG@20"
    qr = next(c for c in ax.containers if c.get_label() == "QR")
    bars = sorted((s for s in qr.lines[2][0].get_segments() if len(s)), key=lambda s: s[0][0])   # by budget
    assert [end for s in bars for end in (s[0][1], s[1][1])] == \
        pytest.approx([end for ends in zip(rows["ndcg@20:ci_low"], rows["ndcg@20:ci_high"]) for end in ends])


def test_a_budget_curve_of_budgeted_methods_only_is_drawn_without_reference_lines(tmp_path):
    """``reproduce budget-curve --methods qr`` plans no UD run: the report draws QR's curve alone, rather than
    failing on the missing references (it used to stop with "cannot build budget-curve ...: dataset")."""
    outputs = built(tmp_path, "budget-curve", ["qr"], [1], curve_level)
    figure = outputs.figures["budget-curve"]
    assert set(legend_texts(figure)) == {"QR"}
    for ax in figure.axes:   # one curve, and no dashed reference line
        assert [c.get_label() for c in ax.containers] == ["QR"]
        assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert outputs.tables[0].name == "budget-curve"


def test_the_budget_axis_is_logarithmic_and_ticked_at_the_budgets(tmp_path, monkeypatch):
    """1%, 2.5%, 4.2%, 6%, 10% grow by factors: a log axis spaces them evenly, each tick is a budget drawn (the
    500-bucket budget named under its share), and the methods of one budget sit beside its tick in the legend's
    order, never on top of each other."""
    # Fabricated records have no dataset sizes to place 500 buckets by: put it at 4.2%, as on Gowalla.
    monkeypatch.setattr(budget_curve, "budget_percent",
                        lambda record, text: float(text[:-1]) if text.endswith("%") else 4.2)
    outputs = built(tmp_path, "budget-curve", ["ud", "pep", "qr"], [1], curve_level)
    assert "| 4.2 (500buckets) | PEP |" in outputs.tables[0].to_markdown()
    figure = outputs.figures["budget-curve"]
    assert [t for t in legend_texts(figure) if "unbudgeted" not in t] == ["QR", "PEP"]   # METHOD_ORDER, not names
    for ax in figure.axes:
        assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
        ticks = list(ax.get_xticks())
        assert len(ticks) == 5 and ticks == sorted(ticks)
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels[2] == f"{ticks[2]:g}%\n(500buckets)"
        assert [text for i, text in enumerate(labels) if i != 2] == [f"{x:g}%" for i, x in enumerate(ticks) if i != 2]
        assert not len(ax.xaxis.get_minor_locator().tick_values(*ax.get_xlim()))   # no unlabelled ticks
        qr, pep = ([np.log10(x) for x in c.lines[0].get_xdata()] for c in ax.containers)
        for budget, left, right in zip(np.log10(ticks), qr, pep):   # the two spread evenly around their budget
            assert left < budget < right
            assert np.isclose(right - left, budget_curve.DODGE_DECADES) and np.isclose(left + right, 2 * budget)


def test_close_budgets_keep_their_points_nearest_their_own_tick(tmp_path, monkeypatch):
    """The 500-bucket budget is 4.94% of Last.fm's float32 bytes, near 6%: the methods of one budget spread over
    at most half the narrowest gap, so a point never sits nearer the next budget's tick than its own."""
    assert budget_curve.dodge_decades([1, 2.5, 4.16, 6, 10], 8) == budget_curve.DODGE_DECADES   # parameters
    narrowed = budget_curve.dodge_decades([1, 2.5, 4.94, 6, 10], 8)                            # bytes
    assert narrowed < budget_curve.DODGE_DECADES and np.isclose(7 * narrowed, 0.5 * np.log10(6 / 4.94))
    monkeypatch.setattr(budget_curve, "budget_percent",
                        lambda record, text: float(text[:-1]) if text.endswith("%") else 5.8)
    figure = built(tmp_path, "budget-curve", ["ud", "pep", "qr"], [1], curve_level).figures["budget-curve"]
    for ax in figure.axes:
        ticks = np.log10(ax.get_xticks())
        for container in ax.containers:
            drawn = np.log10(np.asarray(container.lines[0].get_xdata(), dtype=float))
            nearest = [ticks[np.argmin(abs(ticks - x))] for x in drawn]
            assert nearest == sorted(ticks), container.get_label()   # one point a budget, each by its own tick
        qr, pep = (np.log10(np.asarray(c.lines[0].get_xdata(), dtype=float)) for c in ax.containers)
        assert np.allclose(pep - qr, budget_curve.dodge_decades(list(10 ** ticks), 2))
        assert (pep - qr < budget_curve.DODGE_DECADES).all()


def test_a_point_under_95_percent_of_its_budget_is_drawn_hollow_and_the_legend_says_why(tmp_path):
    def fraction(cell, seed):
        return 0.83 if (cell.method, cell.budget) == ("qr", "1%") else 0.999

    outputs = built(tmp_path, "budget-curve", ["ud", "qr", "pep"], [1], curve_level, fraction=fraction)
    figure = outputs.figures["budget-curve"]
    for ax in figure.axes:
        hollow = [line for line in ax.lines if line.get_markerfacecolor() == "white" and len(line.get_xdata())]
        qr = next(c for c in ax.containers if c.get_label() == "QR").lines[0]
        assert len(hollow) == 1 and list(hollow[0].get_xdata()) == [qr.get_xdata()[0]]   # where QR's 1% is drawn
        assert np.isclose(qr.get_xdata()[0], 1.0, rtol=0.05)
        assert hollow[0].get_markeredgecolor() == figures.method_style("qr", budget_curve.METHOD_ORDER)["color"]
    assert budget_curve.UNDER_BUDGET_LEGEND in legend_texts(figure)
    assert "83.0%" in outputs.tables[0].to_markdown()

    full = built(tmp_path / "full", "budget-curve", ["ud", "qr", "pep"], [1], curve_level,
                 fraction=lambda cell, seed: 1.0)
    assert budget_curve.UNDER_BUDGET_LEGEND not in legend_texts(full.figures["budget-curve"])
    assert not [line for ax in full.figures["budget-curve"].axes for line in ax.lines
                if line.get_markerfacecolor() == "white" and len(line.get_xdata())]


def test_a_quick_figure_is_stamped_as_a_smoke_run(tmp_path, monkeypatch):
    saved = {}
    monkeypatch.setattr(figures, "save", lambda figure, folder, name: saved.setdefault(name, figure) and [])
    out = tmp_path / "out"
    fake_target(out, "budget-curve", ["gowalla"], ["ud", "qr"], [1], curve_level)
    targets.build_target("budget-curve", out, tmp_path / "figs", "two-sided")
    assert figures.SMOKE_STAMP not in texts(saved.pop("budget-curve"))
    manifest = out / "grids" / "budget-curve.json"
    manifest.write_text(manifest.read_text().replace('"quick": false', '"quick": true'))
    targets.build_target("budget-curve", out, tmp_path / "figs", "two-sided")
    assert figures.SMOKE_STAMP in texts(saved["budget-curve"])


@pytest.mark.parametrize("label", ["qr", "my-plugin"])
def test_method_styles_are_stable_and_from_the_palette(label):
    style = figures.method_style(label, budget_curve.METHOD_ORDER)
    assert style == figures.method_style(label, budget_curve.METHOD_ORDER) and style["color"] in figures.PALETTE


def test_every_built_in_method_has_its_own_colour_and_marker_in_the_budget_curve():
    """The curve's fixed order covers every registered built-in (each UD reference under its own label), so no
    two built-ins share a colour, as a hash of their names could make them."""
    from lwbench.registry import builtin_method_names
    labels = {m for m in builtin_method_names() if m != budget_curve.REFERENCE} | {"ud-128", "ud-64"}
    assert labels <= set(budget_curve.METHOD_ORDER)
    styles = [tuple(figures.method_style(label, budget_curve.METHOD_ORDER).values()) for label in labels]
    assert len(set(styles)) == len(labels)


def test_fig4_limits_hold_the_reference_line_and_every_error_bar(tmp_path):
    """A coarse stage far below the cases, and wide two-seed intervals: both stay inside every panel (the axis
    never goes below 0, where no metric is)."""
    def level(cell, seed, checkpoint):
        return 0.01 if checkpoint == COARSE else c2f_level(cell, seed, checkpoint) + 0.02 * (seed == 2)
    outputs = built(tmp_path, "fig4", ["c2f"], [1, 2], level, checkpoints=(COARSE, "fine/update"))
    figure = outputs.figures["fig4"]
    figure.canvas.draw()   # limits as saved
    for ax in figure.axes:
        low, high = ax.get_ylim()
        (reference,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert low <= reference.get_ydata()[0] <= high
        ends = [y for c in ax.containers if isinstance(c, ErrorbarContainer)
                for segment in c.lines[2][0].get_segments() for y in segment[:, 1]]
        assert ends and (low == 0.0 if min(ends) < 0 else 0 <= low <= min(ends))   # a metric's axis stops at 0
        assert max(ends) <= high


def test_a_figure_saved_twice_has_the_same_bytes(tmp_path, monkeypatch):
    """Committed figures regenerate byte for byte, as the tables do: no creation date in the PDF (saved a day
    apart, as matplotlib's clock sees it)."""
    outputs = built(tmp_path, "fig4", ["c2f"], [1, 2, 3], c2f_level, checkpoints=(COARSE, "fine/update"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    first = figures.save(outputs.figures["fig4"], tmp_path / "a", "fig4")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    second = figures.save(outputs.figures["fig4"], tmp_path / "b", "fig4")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_a_figure_with_no_finished_run_is_not_drawn(tmp_path, caplog):
    """Before any run of a target finishes, its table lists them all as not run yet, and no figure is saved:
    empty axes at an invented scale would read as a result. The first finished run draws it."""
    out = tmp_path / "out"
    rows = fake_target(out, "fig6", ["gowalla"], ["c2f"], [1], c2f_level, checkpoints=(COARSE, "fine/update"))
    for run_id in {row["run_id"] for row in rows}:
        (out / "runs" / f"{run_id}.json").unlink()
    written = targets.build_target("fig6", out, tmp_path / "figs", "two-sided")
    assert written and not [p for p in written if p.suffix in (".png", ".pdf")]
    assert not (tmp_path / "figs").exists() or not list((tmp_path / "figs").iterdir())
    assert "fig6: not drawn: none of the 10 runs of fig6 has finished" in caplog.text
    fake_target(out, "fig6", ["gowalla"], ["c2f"], [1], c2f_level, checkpoints=(COARSE, "fine/update"))
    written = targets.build_target("fig6", out, tmp_path / "figs", "two-sided")
    assert {p.name for p in written if p.parent == tmp_path / "figs"} == {"fig6.png", "fig6.pdf"}
