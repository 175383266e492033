import sys
from pathlib import Path

# test helper modules (scenic_fixtures, hubserver) live beside the tests
sys.path.insert(0, str(Path(__file__).parent))
