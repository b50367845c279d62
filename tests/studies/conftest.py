"""Small models on a shared 2-core box: one intra-op thread avoids OpenMP oversubscription,
which made a 12-sensor step 25× slower (3 s instead of 0.12 s) while other jobs ran."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
