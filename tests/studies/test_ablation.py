"""``himnet ablation``: every variant trains a couple of steps under the same settings and the
paper's per-horizon table comes out, as text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model import ABLATIONS
from studies.ablation import VARIANT_NAMES, compare_to_full, format_ablation_table, run_ablation
from training.checkpoint import Checkpoint
from himnet.cli import main
from training.datasets import generate_synthetic

OPTIONS = dict(hidden=4, embedding_dims=(2, 2, 2, 2), max_steps=2, epochs=1, batch_size=8, eval_batch_size=256,
               split="7:1:2", device="cpu", seed=3)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    data = generate_synthetic(num_sensors=5, days=2)
    return run_ablation(data, ABLATIONS, output=tmp_path_factory.mktemp("ablation"), **OPTIONS)


def test_every_variant_trains_under_the_same_budget(result):
    assert [r.variant for r in result.rows] == list(ABLATIONS)
    for r in result.rows:
        assert r.steps == 2 and r.stopped_because == "max steps"
        assert set(r.horizon) == {3, 6, 12}
        for m in (*r.horizon.values(), r.average):
            assert set(m) >= {"mae", "rmse", "mape"} and 0 < m["mae"] <= m["rmse"]
        ckpt = Checkpoint.load(r.checkpoint)
        assert ckpt.config.ablation == r.variant and ckpt.train_settings["seed"] == 3
    params = {r.variant: r.parameters for r in result.rows}
    assert params["no_tmp"] < params["none"] and params["no_smp"] < params["none"]
    assert len({r.average["mae"] for r in result.rows}) > 1  # the variants are different models


def test_table_and_json(result):
    table = format_ablation_table(result)
    for name in VARIANT_NAMES.values():
        assert name in table
    for head in ("Step 3", "Step 6", "Step 12", "Average"):
        assert head in table
    full = result.rows[0]
    assert f"{full.horizon[12]['mae']:6.3f}" in table
    comparison = compare_to_full(result)
    assert comparison.count("\n") == len(ABLATIONS) - 1
    out_dir = Path(result.rows[0].checkpoint).parents[1]  # <output>/<variant>/checkpoint.pt
    saved = json.loads((out_dir / "ablation.json").read_text())
    assert "Step 12" in (out_dir / "ablation.txt").read_text()
    assert [r["name"] for r in saved["rows"]] == [VARIANT_NAMES[v] for v in ABLATIONS]
    assert saved["rows"][0]["horizon"]["12"]["mae"] == pytest.approx(full.horizon[12]["mae"])


def test_same_seed_same_result(tmp_path):
    data = generate_synthetic(num_sensors=5, days=2)
    a = run_ablation(data, ["no_stmp"], output=tmp_path / "a", **OPTIONS)
    b = run_ablation(data, ["no_stmp"], output=tmp_path / "b", **OPTIONS)
    assert a.rows[0].average == b.rows[0].average


def test_cli(tmp_path, capsys):
    code = main(["ablation", "--data", "synthetic", "--data-option", "num_sensors=4", "--data-option", "days=2",
                 "--hidden", "4", "--embedding-dims", "3,0,4,5", "--max-steps", "1", "--epochs", "1",
                 "--variants", "none,no_e_s",
                 "--device", "cpu", "--output", str(tmp_path), "--json", str(tmp_path / "t.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "HimNet" in out and "w/o E_s" in out and "step-12 MAE" in out
    assert json.loads((tmp_path / "t.json").read_text())["settings"]["variants"] == ["none", "no_e_s"]
    config = Checkpoint.load(tmp_path / "none" / "checkpoint.pt").config
    assert (config.tod_embedding_dim, config.dow_embedding_dim, config.node_embedding_dim,
            config.st_embedding_dim) == (3, 0, 4, 5)
    assert main(["ablation", "--variants", "none,bogus", "--output", str(tmp_path / "x")]) == 2
    for bad in ("3,0,4", "3,0,4,x", "3,-1,4,5"):
        with pytest.raises(SystemExit, match="^2$") as exit_:  # argparse's usage error
            main(["ablation", "--embedding-dims", bad, "--output", str(tmp_path / "y")])
        assert exit_.value.code == 2
    assert "needs four sizes TOD,DOW,S,ST" in capsys.readouterr().err


def test_unseen_test_weekdays_are_reported():
    """Eight days from a Monday split 7:1:2: training ends on Saturday, the test reaches Sunday."""
    from studies.ablation import unseen_weekdays
    from training.windows import prepare

    data = generate_synthetic(num_sensors=3, days=8)  # 2024-01-01 is a Monday
    assert unseen_weekdays(prepare(data, "7:1:2")) == [6]  # Sunday
    assert unseen_weekdays(prepare(generate_synthetic(num_sensors=3, days=14), "7:1:2")) == []
