import pytest

from crmledger.storage.datadir import open_data_dir
from tests.ledger_kit import GENESIS, Chain


@pytest.fixture
def data_dir(tmp_path):
    d = open_data_dir(tmp_path / "node", GENESIS)
    yield d
    d.close()


@pytest.fixture
def chain(data_dir):
    return Chain(data_dir.ledger)
