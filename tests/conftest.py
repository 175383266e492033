import sys
from pathlib import Path

import pytest
import torch

# test helper modules (scenic_fixtures, hubserver) live beside the tests
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; with several, OpenMP start-up/spinning dominates
    (and is ruinous on a loaded 2-core CI machine). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
