"""A bounded, thread-safe LRU cache for embeddings, counting hits and misses."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable


class LRU:
    def __init__(self, max_items: int, on_lookup: Callable[[bool], None] | None = None):
        self.max_items, self.on_lookup = max(0, int(max_items)), on_lookup
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable):
        """The cached value for `key` (now the most recently used), or None; counted as a hit or a miss."""
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
        if self.on_lookup:
            self.on_lookup(value is not None)
        return value

    def put(self, key: Hashable, value):
        """Store `value` (not None), evicting the least recently used; returns it."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)
        return value

    def get_or_make(self, key: Hashable, make: Callable[[], object]):
        """The cached value for `key`, else make() (outside the lock), stored."""
        value = self.get(key)
        return self.put(key, make()) if value is None else value
