"""The bucket watch the triggerer runs for score_incoming (plugins/mediacheck_triggers.py)."""

import asyncio
import os
import sys
import time

from pipeline.settings import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "plugins"))
from mediacheck_triggers import NewMediaTrigger  # noqa: E402


def test_fires_once_per_newly_settled_object_and_not_for_what_was_there(tmp_path):
    (tmp_path / "old.jpg").write_bytes(b"there before the watch")
    trigger = NewMediaTrigger(tmp_path.as_uri(), settle_s=1.0, poke_interval=0.05)

    async def watch() -> list[dict]:
        events = []
        stream = trigger.run()
        pending = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.3)
        assert not pending.done()  # nothing new yet
        (tmp_path / "copying.mp4").write_bytes(b"half")  # fresh: not settled
        await asyncio.sleep(0.3)
        assert not pending.done()
        os.utime(tmp_path / "copying.mp4", (time.time() - 5, time.time() - 5))  # the copy finished a while ago
        events.append((await asyncio.wait_for(pending, 5)).payload)
        pending = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.3)
        assert not pending.done()  # reported once only
        pending.cancel()
        return events

    assert asyncio.run(watch()) == [{"new_objects": 1}]
    classpath, kwargs = trigger.serialize()  # what the triggerer rebuilds it from
    assert classpath == "mediacheck_triggers.NewMediaTrigger"
    assert NewMediaTrigger(**kwargs).serialize() == (classpath, kwargs)
