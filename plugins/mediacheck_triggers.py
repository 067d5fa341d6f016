"""Event-driven scoring: a triggerer-side watch on the bucket, so media do not wait for the next poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class NewMediaTrigger(BaseEventTrigger):
    """Fires when the watched bucket holds an object, settled for ``settle_s``, that it has not reported.

    Runs in the triggerer: a listing every ``poke_interval`` seconds (names, sizes and times; no
    object is opened), no task process. What is already there when it starts is left to the
    scheduled poll. The run it starts lists the bucket itself, so a lost event costs only latency.
    """

    def __init__(self, incoming_uri: str, settle_s: float, poke_interval: float) -> None:
        super().__init__()
        self.incoming_uri, self.settle_s, self.poke_interval = incoming_uri, settle_s, poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{__name__}.{type(self).__name__}",
            {"incoming_uri": self.incoming_uri, "settle_s": self.settle_s, "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        reported = await asyncio.to_thread(self._settled)
        while True:
            await asyncio.sleep(self.poke_interval)
            try:
                settled = await asyncio.to_thread(self._settled)
            except OSError as error:  # the bucket unreachable for a moment: look again later
                self.log.warning("cannot list %s: %s", self.incoming_uri, error)
                continue
            if new := settled - reported:
                self.log.info("%d new object(s) settled in %s", len(new), self.incoming_uri)
                yield TriggerEvent({"new_objects": len(new)})
            reported = settled

    def _settled(self) -> frozenset[tuple[str, int, float]]:
        from pipeline import bucket

        objects = bucket.list_bucket(self.incoming_uri).objects
        ready, _ = bucket.settled(objects, settle_s=self.settle_s, now=time.time())
        return frozenset((o.uri, o.size, o.mtime) for o in ready)
