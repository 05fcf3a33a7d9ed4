"""Save, restore and managed save through libvirt's test driver (the lab test proves QEMU's)."""

import pytest

from hosts.adapters import libvirt as lv
from hosts.adapters.errors import AdapterError

TEST_URI = "test:///default"
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"


@pytest.fixture
def conn():
    with lv.open_connection(TEST_URI) as connection:
        yield connection


def test_save_stops_the_guest_and_the_file_names_it(conn, tmp_path):
    # (The test driver refuses restore's running/paused flags; the lab test restores for real.)
    path = str(tmp_path / "test.state")
    lv.save_domain(conn, TEST_DOMAIN_UUID, path, bypass_cache=False)
    assert lv.get_domain(conn, TEST_DOMAIN_UUID).state == "shutoff"
    assert TEST_DOMAIN_UUID in lv.saved_state_xml(conn, path)


def test_restoring_a_missing_file_is_an_adapter_error(conn, tmp_path):
    with pytest.raises(AdapterError, match="restoring the state"):
        lv.restore_domain(conn, str(tmp_path / "none.state"))


def test_managed_save_is_kept_until_removed(conn):
    lv.managed_save(conn, TEST_DOMAIN_UUID)
    assert lv.saved_state(conn, TEST_DOMAIN_UUID).managed_save
    lv.managed_save_remove(conn, TEST_DOMAIN_UUID)
    assert not lv.saved_state(conn, TEST_DOMAIN_UUID).managed_save
