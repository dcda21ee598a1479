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

    def get_or_make(self, key: Hashable, make: Callable[[], object]):
        """The cached value for `key`, else make() (outside the lock), stored, evicting the least recently used."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                if self.on_lookup:
                    self.on_lookup(True)
                return self._data[key]
        if self.on_lookup:
            self.on_lookup(False)
        value = make()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)
        return value
