"""``himnet report`` on a tiny random-weight model of a synthetic road network (coordinates and a
road graph included): every figure and the summary are written, and the clusters are the ones the
service serves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model import HimNet, HimNetConfig
from model.clustering import kmeans
from training.checkpoint import Checkpoint
from himnet.cli import main
from training.datasets import generate_synthetic
from studies.report import (
    adjusted_rand_index,
    build_report,
    cosine_similarity,
    daily_profiles,
    group_similarity,
    hour_membership,
    hourly_similarity,
    temporal_contexts,
    load_learned,
    neighbour_overlap,
)

N = 10
FIGURES = {"spatial_embeddings", "cluster_stability", "cluster_map", "temporal_similarity", "temporal_clusters", "adjacency",
           "cluster_profiles"}


def tiny_checkpoint(data, seed: int = 0) -> Checkpoint:
    config = HimNetConfig(num_nodes=data.num_nodes, hidden_dim=8, tod_embedding_dim=4, dow_embedding_dim=3,
                          node_embedding_dim=4, st_embedding_dim=4, steps_per_day=data.steps_per_day)
    torch.manual_seed(seed)
    model = HimNet(config)
    return Checkpoint(config=config, state_dict=model.state_dict(), scaler_mean=50.0, scaler_std=10.0,
                      sensor_ids=list(data.sensor_ids), interval_minutes=float(data.interval_minutes), dataset=data.name,
                      coords=[(float(a), float(b)) for a, b in data.coords],
                      train_settings={"data": "synthetic", "seed": seed,
                                      "data_options": {"num_sensors": N, "days": 7}})


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(num_sensors=N, days=7)


@pytest.fixture(scope="module")
def report(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    main_ckpt = tiny_checkpoint(data, 0).save(root / "a.pt")
    other = tiny_checkpoint(data, 1).save(root / "b.pt")
    return build_report(main_ckpt, root / "out", clusters=3, compare=other, top_ks=(3, 5))


def test_every_figure_and_the_summary_are_written(report):
    assert set(report.figures) == FIGURES
    for path in report.figures.values():
        blob = path.read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 10_000, path
    text = report.summary.read_text()
    for heading in ("## Spatial clusters", "adjusted Rand index", "## What each cluster means",
                    "## Temporal embeddings", "## Learned adjacency vs road graph", "## Figures"):
        assert heading in text
    for path in report.figures.values():
        assert f"({path.name})" in text
    saved = json.loads((report.out_dir / "report.json").read_text())
    assert saved["clusters"] == 3 and sum(saved["cluster_sizes"]) == N
    assert saved["notes"] == []


def test_clusters_are_the_services(report, data, tmp_path):
    """Same function and defaults as GET /embeddings (service/embeddings.py)."""
    from service.embeddings import EmbeddingIndex

    learned = load_learned(report.numbers.source)
    index = EmbeddingIndex.build({"node_embedding": learned.node_embedding, "adjacency": learned.adjacency},
                                 learned.sensor_ids, None, n_clusters=3, seed=0, k_neighbours=3)
    assert report.numbers.labels == index.clusters.tolist()
    assert report.numbers.labels == kmeans(learned.node_embedding.astype(np.float64), 3, seed=0).labels.tolist()


def test_stability_numbers(report):
    ari = report.numbers.ari_kmeans_seeds["ari"]
    assert -1.0 <= ari <= 1.0
    (other,) = report.numbers.ari_models
    assert other["other_seed"] == 1
    assert -1.0 <= other["ari"] <= 1.0 and -1.0 <= other["distance_correlation"] <= 1.0
    st = report.numbers.stability
    assert [r["k"] for r in st["by_k"]] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert st["basis"] == "trained models" and st["recommended_k"] in range(3, 11)
    assert len(st["cluster_jaccard"]) == 3
    text = report.summary.read_text()
    assert "| 3 (shown)" in text and "geometry (Spearman" in text
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert adjusted_rand_index([0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1]) < 0.0


def test_auto_clusters_show_the_most_reproducible_k(data, tmp_path):
    path = tiny_checkpoint(data, 0).save(tmp_path / "a.pt")
    rep = build_report(path, tmp_path / "r", clusters="auto", stability_ks=(2, 3, 4), top_ks=(3,))
    assert rep.numbers.clusters == rep.numbers.stability["recommended_k"]
    assert rep.numbers.stability["basis"] == "k-means seeds" and rep.numbers.ari_models == []
    assert "give `--compare`" in rep.summary.read_text()


def test_neighbour_overlap_against_known_graphs():
    n = 12
    road = np.zeros((n, n))
    for i in range(n - 1):  # a chain: every sensor's road neighbours are i-1 and i+1
        road[i, i + 1] = 1.0
    same = np.full((n, n), 0.01)
    for i in range(n):
        for j in (i - 1, i + 1):
            if 0 <= j < n:
                same[i, j] = 0.5
    assert neighbour_overlap(same, road, 2)["overlap"] == pytest.approx(1.0)
    far = np.full((n, n), 0.01)
    for i in range(n):
        far[i, (i + n // 2) % n] = 0.5
        far[i, (i + n // 2 + 1) % n] = 0.4
    res = neighbour_overlap(far, road, 2)
    assert res["overlap"] == pytest.approx(0.0)
    assert res["random_expected"] == pytest.approx(2 / 11)
    assert abs(res["random_mean"] - 2 / 11) < 0.05


def test_temporal_groups_separate_when_the_table_does():
    """A time-of-day table built to tell rush hours from nights scores a positive separation."""
    steps = 288
    hours = np.arange(steps) * 24 / steps
    rush = ((hours >= 7) & (hours < 10)) | ((hours >= 16) & (hours < 19))
    night = hours < 5
    tod = np.stack([rush.astype(float), night.astype(float), (~rush & ~night).astype(float)], 1)
    dow = np.zeros((7, 2))
    dow[:5, 0] = 1.0
    dow[5:, 1] = 1.0
    sim = hourly_similarity(tod, dow)
    groups = group_similarity(sim)
    assert groups["separation"] > 0.3
    flat = group_similarity(np.ones((168, 168)))
    assert flat["separation"] == pytest.approx(0.0)


def test_daily_profiles_average_by_slot_and_skip_missing(data):
    d = data.subset(nodes=2)
    d.values[:] = 40.0
    d.values[::7, 0] = 0.0  # one day in seven missing at each slot: must not pull the mean down
    d.values[d.timestamps.astype("datetime64[D]").view("int64") % 7 == 3, 1] = 0.0  # 1970-01-01 + 3 = Sunday
    d.values[::288, 1] = 80.0  # midnight readings of sensor 1 are 80 on the days it reports
    prof = daily_profiles(d)
    assert prof["weekday"].shape == prof["weekend"].shape == (2, d.steps_per_day)
    assert np.allclose(prof["weekday"][0], 40.0) and np.allclose(prof["weekend"][0], 40.0)
    assert prof["weekday"][1, 0] == 80.0 and np.allclose(prof["weekday"][1, 1:], 40.0)
    # sensor 1 never reports on Sunday, so its weekend profile is Saturday's alone
    assert prof["weekend"][1, 0] == 80.0 and np.allclose(prof["weekend"][1, 1:], 40.0)


def test_cli_on_a_model_without_time_tables(data, tmp_path, capsys):
    """w/o E_t has no temporal tables: the report says so instead of failing."""
    ckpt = tiny_checkpoint(data)
    ckpt.config = ckpt.config.replace(ablation="no_e_t")
    torch.manual_seed(0)
    ckpt.state_dict = HimNet(ckpt.config).state_dict()
    path = ckpt.save(tmp_path / "no_e_t.pt")
    assert main(["report", str(path), "--out", str(tmp_path / "r"), "--clusters", "2", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "no temporal embedding tables" in out
    assert not (tmp_path / "r" / "temporal_similarity.png").exists()
    assert (tmp_path / "r" / "adjacency.png").is_file() and (tmp_path / "r" / "cluster_map.png").is_file()


def test_a_model_without_day_of_week_embedding(data, tmp_path):
    """d_dow = 0 (a dataset too short to learn weekdays): time-of-day contexts only, said so."""
    ckpt = tiny_checkpoint(data)
    ckpt.config = ckpt.config.replace(dow_embedding_dim=0)
    torch.manual_seed(0)
    ckpt.state_dict = HimNet(ckpt.config).state_dict()
    rep = build_report(ckpt.save(tmp_path / "no_dow.pt"), tmp_path / "r", clusters=2, top_ks=(3,))
    assert set(rep.figures) == FIGURES
    assert rep.numbers.temporal["dow_similarity"] is None
    assert "d_dow = 0" in rep.summary.read_text()
    labels = np.asarray(rep.numbers.temporal["clusters"])
    assert labels.shape == (7, data.steps_per_day) and (labels == labels[0]).all()  # every day alike


def test_a_bundle_gives_the_same_report_as_its_checkpoint(report, data, tmp_path):
    """A bundle's embeddings.npz (written as ``himnet export`` writes it) reads like the checkpoint."""
    from model.bundle import BUNDLE_FORMAT, EMBEDDINGS_FILE, Manifest, sha256_file, utc_now_iso, write_manifest
    from model.bundle_files import write_embeddings

    ckpt = Checkpoint.load(report.numbers.source)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    write_embeddings(ckpt.build_model(), bundle / EMBEDDINGS_FILE)
    c = ckpt.config
    write_manifest(bundle, Manifest(
        format_version=BUNDLE_FORMAT, model_name="himnet", model_version="test", dataset="synthetic",
        created_at=utc_now_iso(), config=c.to_dict(), num_nodes=c.num_nodes, in_steps=c.in_steps,
        out_steps=c.out_steps, interval_minutes=ckpt.interval_minutes, steps_per_day=c.steps_per_day,
        timezone=None, sensor_ids=ckpt.sensor_ids, coords=[list(p) for p in ckpt.coords],
        scaler_mean=ckpt.scaler_mean, scaler_std=ckpt.scaler_std, missing_value=0.0,
        st_embedding_dim=c.st_embedding_dim, metrics={}, parity={},
        files={EMBEDDINGS_FILE: sha256_file(bundle / EMBEDDINGS_FILE)}))
    from_bundle = build_report(bundle, tmp_path / "out", data=data, clusters=3, top_ks=(3, 5))
    assert from_bundle.numbers.kind == "bundle"
    assert from_bundle.numbers.labels == report.numbers.labels
    assert set(from_bundle.figures) == FIGURES
    assert from_bundle.numbers.adjacency_overlap == report.numbers.adjacency_overlap
    against_bundle = build_report(report.numbers.source, tmp_path / "vs", data=data, clusters=3,
                                  compare=[bundle], stability_ks=(3,), top_ks=(3,))
    (row,) = against_bundle.numbers.ari_models
    assert row["ari"] == pytest.approx(1.0) and row["distance_correlation"] == pytest.approx(1.0)
    assert f"| `{bundle}` | - | 1.000 | 1.000 |" in against_bundle.summary.read_text()  # no training seed


def test_temporal_contexts_and_hourly_averaging():
    tod = np.arange(288, dtype=float)[:, None]  # slot number as a 1-D embedding
    dow = np.arange(7, dtype=float)[:, None]
    ctx = temporal_contexts(tod, dow)
    assert ctx.shape == (7 * 288, 2)
    assert ctx[3 * 288 + 100].tolist() == [100.0, 3.0]  # Thursday, slot 100: what HimNet concatenates
    m = hour_membership(288)
    assert m.shape == (168, 2016) and np.allclose(m.sum(1), 1.0)
    assert (m @ ctx)[3 * 24 + 1].tolist() == pytest.approx([np.mean(np.arange(12, 24)), 3.0])
    coarse = hour_membership(12)  # 2-hour slots: hour 5 takes slot 2
    assert coarse[5, 2] == 1.0 and np.allclose(coarse.sum(1), 1.0)
    sim = hourly_similarity(np.random.default_rng(0).normal(size=(288, 3)), np.ones((7, 2)))
    assert sim.shape == (168, 168) and np.allclose(sim, sim.T)


def test_a_model_without_spatial_embedding_has_no_stability_to_measure(data, tmp_path):
    """w/o E_s gives every sensor the same embedding: one cluster, said so, no stability table."""
    paths = []
    for seed in (0, 1):
        ckpt = tiny_checkpoint(data, seed)
        ckpt.config = ckpt.config.replace(ablation="no_e_s")
        torch.manual_seed(seed)
        ckpt.state_dict = HimNet(ckpt.config).state_dict()
        paths.append(ckpt.save(tmp_path / f"no_e_s_{seed}.pt"))
    rep = build_report(paths[0], tmp_path / "r", clusters="auto", compare=paths[1:], top_ks=(3,))
    assert rep.numbers.clusters == 1 and rep.numbers.stability is None and rep.numbers.ari_models == []
    assert "cluster_stability" not in rep.figures and set(rep.figures) == FIGURES - {"cluster_stability"}
    assert "w/o E_s" in rep.summary.read_text()
