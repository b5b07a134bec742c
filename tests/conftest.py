import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real clips and sequences made by others; absent in a user's fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (only present in the project's workspace)")
    return SHARED_DATA
