"""One intra-op thread for the small models trained here (see ``tests/torch_threads.py``)."""

import pytest

from tests.torch_threads import one_torch_thread

_one_thread = pytest.fixture(autouse=True, scope="session")(one_torch_thread)
