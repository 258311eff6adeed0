"""The index the partition watermark is computed from (collector/aggregate/state.py).

Watermark = oldest newest-event-time among the partition's active sites - lateness: sites
batch and deliver at their own pace, so a partition moves only as fast as its slowest site,
unless that site is more than `site_idle_s` behind the newest one.
"""

from __future__ import annotations

import heapq


class NewestEventIndex:
    """The smallest per-site newest event time among sites at or above a rising floor.

    The partition watermark needs it after every record; a scan over all sites would cost
    O(sites) per record. Sites' values only rise and the floor only rises, so a min-heap with
    lazy deletion answers in amortised O(log sites): an entry is stale when its site has
    moved on (a newer entry exists) or fell below the floor (a site that moves again gets a
    new entry).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int]] = []  # (value, site)
        self._value: dict[int, int] = {}

    def update(self, site: int, value: int) -> None:
        if self._value.get(site, value - 1) < value:
            self._value[site] = value
            heapq.heappush(self._heap, (value, site))

    def min_at_least(self, floor: int) -> int | None:
        heap = self._heap
        while heap and (heap[0][0] < floor or self._value[heap[0][1]] != heap[0][0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None
