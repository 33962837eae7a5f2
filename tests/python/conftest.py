import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("BERTLET_BUILD_DIR", ROOT / "build"))
MODELS = pathlib.Path(os.environ.get("BERTLET_MODELS", ROOT / "models"))
DATA = pathlib.Path(os.environ.get("BERTLET_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def build_dir():
    return BUILD


@pytest.fixture(scope="session")
def blob_path():
    p = MODELS / "all-MiniLM-L6-v2.bertlet"
    assert p.exists(), f"{p} is missing: run scripts/setup.sh"
    return p


@pytest.fixture(scope="session")
def tool(build_dir):
    def path(name):
        p = build_dir / "examples" / name
        assert p.exists(), f"{p} is missing: build first (scripts/build.sh)"
        return str(p)
    return path
