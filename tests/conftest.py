import pytest

pytest_plugins = ["tests.mailworld", "tests.services"]


@pytest.fixture
def db(tmp_path):
    from engine.store import open_database

    database = open_database(f"sqlite:///{tmp_path}/vec.db")
    yield database
    database.close()
