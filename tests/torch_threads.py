"""Small models on a shared 2-core box: one intra-op thread avoids OpenMP oversubscription,
which made a 12-sensor step 25× slower (3 s instead of 0.12 s) while other jobs ran.

The test packages that train small models (``tests/training``, ``tests/studies``) bind
:func:`one_torch_thread` as an autouse session fixture in their ``conftest.py``.
"""

from collections.abc import Iterator

import torch


def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
