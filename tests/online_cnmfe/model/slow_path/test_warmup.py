"""The slow path's kernels are loaded before the first frame, also for a resumed model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SAVE = """
    import sys
    from online_cnmfe.model.online import OnlineCNMFE
    from online_cnmfe.results.state_file import save_model
    from tests.online_cnmfe import slow_harness as h
    movie = h.make_movie(T=240)
    params = h.params_for()
    model = OnlineCNMFE(params)
    model.initialize_from(h.init_result(movie, 200), movie.Y[:200])
    for y in movie.Y[200:]:
        model.process_frame(y)
    model.settle_slow_path()
    save_model(sys.argv[1], model.params, model.state)
"""

LOAD = """
    import sys
    from online_cnmfe.model._kernels import detection as kdet
    from online_cnmfe.model._kernels import stats as kst
    from online_cnmfe.model.online import OnlineCNMFE
    from online_cnmfe.results.state_file import load_model
    params, state = load_model(sys.argv[1])
    model = OnlineCNMFE.from_state(params, state)
    kernels = (kdet.detection_candidates, kdet.rank1_nmf, kdet.nms_greedy, kst.hals_neuron)
    missing = [k.py_func.__name__ for k in kernels if not k.signatures]
    assert not missing, missing
"""


def _python(code: str, *args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_resumed_model_has_the_slow_paths_kernels_loaded(tmp_path):
    """A model read back from a state file (``--resume``) loads the slow path's kernels
    when it is built, not on its first search, birth or merge: the engine's first birth after
    a resume took 280 ms of the slow path's thread at 608², which the next frames waited for.
    Fresh interpreters: one saves a model, the other only reads it back."""
    path = tmp_path / "model.state.h5"
    _python(SAVE, str(path))
    _python(LOAD, str(path))
