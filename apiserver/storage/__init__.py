"""The storage layer: revision-aware keys and values over etcd (see etcd.py)."""
from apiserver.storage.etcd import (Compacted, EtcdStore, Event, KeyValue, ListResult,
                                    StorageError, TooLarge, Unavailable)

__all__ = ["Compacted", "EtcdStore", "Event", "KeyValue", "ListResult", "StorageError",
           "TooLarge", "Unavailable"]
