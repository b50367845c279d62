"""The cache's byte layout of a model output (service/cache.py ``OutputCodec``)."""

from __future__ import annotations

import numpy as np
import pytest

from service.cache import DIGEST_BYTES, ModelOutput, OutputCodec

DIGEST = b"d" * DIGEST_BYTES


def _output(spread: bool, seed: int = 0) -> ModelOutput:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(12, 5)).astype(np.float32)
    st = rng.normal(size=(5, 3)).astype(np.float32)
    return ModelOutput(f, st, np.abs(rng.normal(size=(12, 5))).astype(np.float32) if spread else None)


@pytest.mark.parametrize("spread", [False, True])
def test_round_trip_is_exact(spread: bool) -> None:
    codec = OutputCodec(12, 5, 3, spread=spread)
    out = _output(spread)
    back = codec.decode(codec.encode(DIGEST, out), DIGEST)
    assert back is not None
    assert np.array_equal(back.forecast, out.forecast) and np.array_equal(back.st_embedding, out.st_embedding)
    assert (back.spread is None) is (not spread)
    if spread:
        assert np.array_equal(back.spread, out.spread)


def test_an_entry_of_the_other_layout_or_window_is_a_miss() -> None:
    single, ensemble = OutputCodec(12, 5, 3), OutputCodec(12, 5, 3, spread=True)
    assert ensemble.decode(single.encode(DIGEST, _output(False)), DIGEST) is None
    assert single.decode(ensemble.encode(DIGEST, _output(True)), DIGEST) is None
    assert ensemble.decode(ensemble.encode(DIGEST, _output(True)), b"x" * DIGEST_BYTES) is None


def test_an_ensemble_output_without_its_spread_is_refused() -> None:
    with pytest.raises(ValueError, match="spread"):
        OutputCodec(12, 5, 3, spread=True).encode(DIGEST, _output(False))
