"""DiskStore keeps the index rows it looked up in memory: every write must show in the
next lookup, as if each lookup asked SQLite."""

from __future__ import annotations

import os

import pytest

from mirrorgate.cache.policy import Entry
from mirrorgate.cache.store import DiskStore

URL = "https://origin.example/files/a.bin"


def put(store: DiskStore, key: str, body: bytes, at: float = 1.0) -> Entry:
    writer = store.begin(len(body))
    writer.write(body)
    entry = store.publish(writer, Entry(key, URL, "artifact", 200, (("ETag", f'"{body.decode()}"'),), len(body), at, at))
    writer.close()
    return entry


def test_every_write_shows_in_the_next_lookup(tmp_path):
    store = DiskStore(tmp_path, 1 << 20, 0)
    assert store.lookup(URL) is None
    put(store, URL, b"one")
    assert store.lookup(URL).header("etag") == '"one"'
    assert store.lookup(URL) is store.lookup(URL)  # kept, not read again

    put(store, URL, b"two", at=2.0)
    assert (store.lookup(URL).header("etag"), store.lookup(URL).stored_at) == ('"two"', 2.0)

    store.revalidated(store.lookup(URL), (("ETag", '"three"'),), 3.0)
    assert (store.lookup(URL).header("etag"), store.lookup(URL).validated_at) == ('"three"', 3.0)

    store.delete(URL)
    assert store.lookup(URL) is None
    put(store, URL, b"four")
    assert store.purge(url=URL) == 1 and store.lookup(URL) is None
    put(store, URL, b"five")
    assert store.purge(everything=True) == 1 and store.lookup(URL) is None
    store.close()


def test_evicted_and_vanished_entries_are_not_found(tmp_path):
    store = DiskStore(tmp_path, 10, 0)
    put(store, URL, b"12345678")
    assert store.lookup(URL) is not None
    put(store, URL + "2", b"abcdefgh")  # over the bound of 10 bytes: the older entry goes
    assert store.lookup(URL) is None and store.lookup(URL + "2") is not None

    entry = store.lookup(URL + "2")
    (store.objects / entry.name[:2] / entry.name).unlink()
    with pytest.raises(FileNotFoundError):
        store.open(entry)
    assert store.lookup(URL + "2") is None
    store.close()

    reopened = DiskStore(tmp_path, 10, 0)  # rows come from the index again
    assert reopened.lookup(URL) is None and reopened.lookup(URL + "2") is None
    reopened.close()


def test_a_cache_dir_serves_one_process_at_a_time(tmp_path):
    first = DiskStore(tmp_path, 1 << 20, 0)
    with pytest.raises(OSError, match=rf"another Mirrorgate process \(pid {os.getpid()}\) is using it"):
        DiskStore(tmp_path, 1 << 20, 0)
    first.close()
    DiskStore(tmp_path, 1 << 20, 0).close()  # released with the first
