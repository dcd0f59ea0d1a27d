import os

import pytest
from hypothesis import Phase, settings

# A profile chosen by VEC_HYPOTHESIS_PROFILE: "mutation" (scripts/mutation) reruns every
# property test once per mutant, so it draws few examples, always the same ones, and does not
# shrink a failure (a killed mutant needs no minimal example).
settings.register_profile("mutation", max_examples=20, derandomize=True, database=None, deadline=None,
                          phases=[Phase.explicit, Phase.generate])
if os.environ.get("VEC_HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["VEC_HYPOTHESIS_PROFILE"])

pytest_plugins = ["tests.mailworld", "tests.services"]


@pytest.fixture
def db(tmp_path):
    from engine.store import open_database

    database = open_database(f"sqlite:///{tmp_path}/vec.db")
    yield database
    database.close()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups into the node ids
def pytest_collection_modifyitems(items):
    """Under pytest-xdist (scripts/test runs with -n), every test of the loopback mail world
    goes to one worker: the world binds fixed ports, so only one can run per machine."""
    for item in items:
        if "mailworld" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("mailworld"))
