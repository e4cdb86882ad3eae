"""The engine's heap freeze: live objects leave the collector's generations while it runs."""

from __future__ import annotations

import gc
import weakref

from online_cnmfe.engine import heap


class Node:
    def __init__(self) -> None:
        self.other = self  # a reference cycle: tracked by the collector


def _in_collected_generations(obj) -> bool:
    return any(o is obj for gen in range(3) for o in gc.get_objects(generation=gen))


def test_freeze_takes_live_objects_out_of_full_collections_and_thaw_gives_them_back():
    gc.unfreeze()
    node = Node()
    assert _in_collected_generations(node)
    try:
        n = heap.freeze()
        assert n == gc.get_freeze_count() and n > 0
        assert not _in_collected_generations(node)  # a full collection no longer traverses it
        young = Node()  # allocated after the freeze: collected as usual
        assert _in_collected_generations(young)
    finally:
        heap.thaw()
    assert gc.get_freeze_count() == 0
    assert _in_collected_generations(node)


def test_garbage_is_collected_before_the_freeze():
    gc.unfreeze()
    garbage = Node()
    ref = weakref.ref(garbage)
    del garbage  # an unreachable cycle: freed by the collection, not frozen for the whole run
    try:
        gc.disable()  # no automatic collection in between: only freeze() may free it
        assert ref() is not None
        heap.freeze()
        assert ref() is None
    finally:
        gc.enable()
        heap.thaw()
