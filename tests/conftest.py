import os

import pytest


@pytest.fixture
def mirror() -> str:
    """The real openai/parameter-golf git directory; tests using it skip without PGOLF_MIRROR."""
    path = os.environ.get("PGOLF_MIRROR")
    if not path:
        pytest.skip("PGOLF_MIRROR not set")
    return path
