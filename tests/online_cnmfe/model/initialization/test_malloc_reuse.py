"""reuse_freed_memory: a freed large array's pages serve the next one inside the block only.

Each case runs in a fresh interpreter: the policy is process-wide, and a fit still running on
another test's thread (engine tests) would hold it on in this one.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from online_cnmfe.model.initialization import malloc_reuse as heap

pytestmark = pytest.mark.skipif(heap._LIBC is None, reason="needs glibc's mallopt")

_PRELUDE = """
import json, resource, threading
import numpy as np
from online_cnmfe.model.initialization import malloc_reuse as heap

def faults_of_two_arrays(n_bytes):
    out = []
    for _ in range(2):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.empty(n_bytes // 4, np.float32)
        a.fill(1.0)
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        del a
    return out
"""


def _run(body: str) -> dict:
    code = _PRELUDE + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_array_reuses_the_first_ones_pages_inside_the_block():
    r = _run("""
        with heap.reuse_freed_memory():
            first, second = faults_of_two_arrays(256 * 2**20)
        print(json.dumps({"first": first, "second": second}))
    """)
    assert r["first"] > 100  # 256 MB of fresh pages: 128 huge pages at the very least
    assert r["second"] < r["first"] / 10


def test_outside_the_block_each_array_is_mapped_anew():
    r = _run("""
        with heap.reuse_freed_memory():
            pass
        first, second = faults_of_two_arrays(256 * 2**20)
        print(json.dumps({"first": first, "second": second}))
    """)
    assert r["second"] > r["first"] / 4  # unmapped on free, faulted in again


def test_nested_and_concurrent_blocks_restore_once_all_have_left():
    r = _run("""
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
        depth_inside = heap._depth
        _, second = faults_of_two_arrays(128 * 2**20)
        release.set()
        t.join()
        print(json.dumps({"depth": depth_inside, "after": heap._depth, "second": second}))
    """)
    assert r["depth"] == 1 and r["after"] == 0
    assert r["second"] < 1000
