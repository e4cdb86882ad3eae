"""reuse_freed_memory: a freed large array's pages serve the next one inside the block only."""

import resource
import threading

import numpy as np
import pytest

from online_cnmfe.model.initialization import heap

pytestmark = pytest.mark.skipif(heap._LIBC is None, reason="needs glibc's mallopt")

_MB = 2**20


def _faults_of_two_arrays(n_bytes: int) -> tuple[int, int]:
    """Minor page faults of writing a fresh array, and of a second one after freeing it."""
    out = []
    for _ in range(2):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.empty(n_bytes // 4, np.float32)
        a.fill(1.0)
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        del a
    return out[0], out[1]


def test_second_array_reuses_the_first_ones_pages_inside_the_block():
    with heap.reuse_freed_memory():
        first, second = _faults_of_two_arrays(256 * _MB)
    assert first > 100  # 256 MB of fresh pages: 128 huge pages at the very least
    assert second < first / 10


def test_outside_the_block_each_array_is_mapped_anew():
    with heap.reuse_freed_memory():
        pass
    first, second = _faults_of_two_arrays(256 * _MB)
    assert second > first / 4  # unmapped on free, faulted in again (huge pages: fewer)


def test_nested_and_concurrent_blocks_restore_once_all_have_left():
    entered, release = threading.Event(), threading.Event()

    def other_fit():
        with heap.reuse_freed_memory():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other_fit)
    t.start()
    entered.wait(10)
    with heap.reuse_freed_memory():
        pass  # leaving this block must not switch the policy off under the other one
    assert heap._depth == 1
    _, second = _faults_of_two_arrays(128 * _MB)
    release.set()
    t.join()
    assert heap._depth == 0
    assert second < 1000
