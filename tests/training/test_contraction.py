"""The export's choice of contraction order, and what each order puts into the graph."""

from __future__ import annotations

import onnx
import pytest
import torch

from model.config import CONTRACTIONS
from training.contraction import pick_contraction
from training.export import TRACE_BATCH, build_serving, write_onnx
from training.parity import synthetic_parity_data


def _t(b1: float, b16: float) -> dict[str, float]:
    return {"1": b1, "16": b16}


def test_batch_one_decides_when_one_order_is_clearly_faster():
    assert pick_contraction({"generate": _t(125.0, 900.0), "pool": _t(124.0, 700.0),
                             "pool_all": _t(100.0, 2000.0)}) == "pool_all"
    assert pick_contraction({"generate": _t(20.0, 300.0), "pool": _t(26.0, 100.0),
                             "pool_all": _t(30.0, 90.0)}) == "generate"


def test_ties_at_batch_one_go_to_the_faster_order_at_batch_sixteen():
    # pool is within 10 % of the fastest (generate), pool_all is not: pool wins on batch 16
    assert pick_contraction({"generate": _t(20.0, 320.0), "pool": _t(21.9, 310.0),
                             "pool_all": _t(23.0, 100.0)}) == "pool"


def test_a_full_tie_keeps_the_simpler_earlier_order():
    assert pick_contraction({c: _t(10.0, 50.0) for c in CONTRACTIONS}) == CONTRACTIONS[0]


def _initializer_shapes(path) -> list[list[int]]:
    return [list(i.dims) for i in onnx.load(str(path)).graph.initializer]


@pytest.mark.parametrize("order, spatial_generated", [("generate", True), ("pool", True), ("pool_all", False)])
def test_only_pool_all_leaves_the_per_node_spatial_weights_out_of_the_graph(tiny_checkpoint, tmp_path,
                                                                           order, spatial_generated):
    """pool_all must not stream N·KC·O spatial weights at each step: they are not in its file."""
    c = tiny_checkpoint.config
    kc = c.cheb_k * (c.input_dim + c.hidden_dim)
    serving = build_serving(tiny_checkpoint, order)
    example = tuple(torch.from_numpy(a) for a in synthetic_parity_data(tiny_checkpoint).take(TRACE_BATCH))
    write_onnx(serving, tmp_path / "m.onnx", example, 17)
    shapes = _initializer_shapes(tmp_path / "m.onnx")
    assert ([c.num_nodes, kc, 2 * c.hidden_dim] in shapes) is spatial_generated
    assert ([c.num_nodes, kc, c.hidden_dim] in shapes) is spatial_generated
