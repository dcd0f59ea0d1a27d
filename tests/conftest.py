import pytest

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
