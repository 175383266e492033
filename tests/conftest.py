import sys
from pathlib import Path

import pytest
import torch

# test helper modules (scenic_fixtures, hubserver) live beside the tests
sys.path.insert(0, str(Path(__file__).parent))

from hubserver import hub_server  # noqa: F401 - a fixture: importing it here makes it visible to every test


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; with several, OpenMP start-up/spinning dominates
    (and is ruinous on a loaded 2-core CI machine). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_SLOW_KINDS = ("distributed", "onnx", "fuzz", "compile")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Process groups, exports, fuzzing and compilation are slow by nature: mark them so, once, here."""
    for item in items:
        if any(item.get_closest_marker(kind) for kind in _SLOW_KINDS) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
