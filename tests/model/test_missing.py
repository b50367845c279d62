"""The missing-value rule (model/missing.py), one rule for numpy and torch, training and serving."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from model.missing import DEFAULT_RULE, MISSING_VALUE, ZERO, MissingRule, missing_mask, observed_mask
from tests.conftest import REPO


def test_zero_marks_a_missing_reading():
    assert DEFAULT_RULE is ZERO and ZERO == MissingRule("zero", 0.0) and MISSING_VALUE == 0.0


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_mask_and_observed_for_numpy_and_torch(lib):
    raw = [[0.0, 61.5, -0.0], [3.0, 0.0, 0.001]]
    values = np.array(raw, np.float32) if lib == "numpy" else torch.tensor(raw)
    missing, observed = missing_mask(values), observed_mask(values)
    assert type(missing) is type(values) and type(observed) is type(values)  # same library back
    want = [[True, False, True], [False, True, False]]  # -0.0 == 0: missing too
    assert np.asarray(missing).tolist() == want
    assert np.asarray(observed).tolist() == [[not w for w in row] for row in want]
    assert np.asarray(ZERO.mask(values)).tolist() == want


def test_only_the_rule_value_is_missing_under_zero():
    """NaN is not a zero-rule gap: readers store NaN as 0 before anything masks (behaviour kept)."""
    values = np.array([np.nan, 0.0, 1.0])
    assert missing_mask(values).tolist() == [False, True, False]
    assert missing_mask(torch.from_numpy(values)).tolist() == [False, True, False]


def test_a_rule_is_a_frozen_value():
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'value'"):
        ZERO.value = 1.0  # type: ignore[misc]
    sentinel = MissingRule("sentinel", -1.0)  # the shape a data set's own rule will take
    assert missing_mask(np.array([-1.0, 0.0]), sentinel).tolist() == [True, False]


def test_consumers_mask_what_the_rule_masks():
    """Loss, metrics and baselines ignore exactly the rule's missing readings."""
    from training.baselines import last_value
    from training.metrics import MetricSums, masked_mae

    target = torch.tensor([[[0.0, 10.0], [20.0, 0.0]]])  # B=1, T=2, N=2
    pred = torch.tensor([[[5.0, 11.0], [22.0, 7.0]]])
    assert masked_mae(pred, target).item() == pytest.approx(1.5)  # (1 + 2) / 2 observed
    sums = MetricSums(2)
    sums.update(pred, target)
    assert sums.count.tolist() == observed_mask(target).sum(dim=(0, 2)).double().tolist() == [1.0, 1.0]
    x_raw = torch.tensor([[[4.0, 9.0], [MISSING_VALUE, 8.0]]])  # sensor 0 last seen at step 0
    assert last_value(x_raw, 1, torch.zeros(2)).tolist() == [[[4.0, 8.0]]]


def test_importing_the_rule_does_not_import_torch():
    """The service reads model/missing.py in an image without torch."""
    code = "import sys, model.missing; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
