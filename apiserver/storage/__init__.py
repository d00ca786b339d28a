"""The storage layer: revision-aware keys and values behind one interface (interface.py),
on etcd (etcd.py) or in memory (memory.py)."""
from apiserver.storage.etcd import EtcdStore
from apiserver.storage.interface import (Compacted, Event, KeyValue, ListResult, NoSpace,
                                         StorageError, Store, TooLarge, Unavailable)
from apiserver.storage.memory import MemoryStore

__all__ = ["Compacted", "EtcdStore", "Event", "KeyValue", "ListResult", "MemoryStore",
           "NoSpace", "StorageError", "Store", "TooLarge", "Unavailable"]
