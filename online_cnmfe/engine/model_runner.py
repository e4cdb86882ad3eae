"""The engine's model side: buffering the first frames, initialising off the model thread, and
turning the initialisation fit into per-frame results for the store.

Initialisation takes seconds to minutes, so it runs on a worker thread while the model thread
keeps publishing status; frames that arrive meanwhile wait in the engine's queue (in memory,
then in the disk spool) and are processed afterwards, in catch-up mode.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.model.frame_screen import screen_frames
from online_cnmfe.model.initialization.fit import fit_initial
from online_cnmfe.model.motion import init_frame_fields
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)


class ModelRunner:
    """Own the model through its phases: ``waiting`` → ``initialising`` → ``running``.

    Parameters
    ----------
    params : CNMFEParams
    model_factory : callable
        ``model_factory(params)`` returns an object with the ``OnlineCNMFE`` interface.
    model : object, optional
        An already initialised model (``--resume`` from a checkpoint).
    first_free_id : int
        A model initialised here has its neuron ids shifted to start at this id (``--resume``
        without a checkpoint: ids already in the results file are never reused).
    """

    def __init__(
        self, params: CNMFEParams, model_factory: Callable, model: Any = None,
        first_free_id: int = 0,
    ) -> None:  # fmt: skip
        self.params = params
        self.first_free_id = int(first_free_id)
        self.model_factory = model_factory
        self.model = model
        self.dims: tuple[int, int] | None = tuple(model.dims) if model is not None else None
        self.frames: list[np.ndarray] = []
        self.metas: list[dict[str, Any]] = []
        self.init_result = None
        self.init_error: BaseException | None = None
        self.corr_pnr: np.ndarray | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        # the fit's progress, written by the initialisation thread (one reference each)
        self._fit_stage: str | None = None
        self._fit_fraction = 0.0

    @property
    def phase(self) -> str:
        if self.model is not None and self._thread is None:
            return "running"
        return "initialising" if self._thread is not None else "waiting"

    @property
    def init_progress(self) -> float:
        if self.phase == "running":
            return 1.0
        return min(1.0, len(self.frames) / self.params.init.init_frames)

    @property
    def init_stage(self) -> str | None:
        """The initialisation fit's current stage (e.g. ``"seeding"``) while it runs, else
        None."""
        return self._fit_stage if self.phase == "initialising" else None

    @property
    def init_fit_progress(self) -> float:
        """Fraction of the initialisation fit done: 0 before it starts, 1 once running."""
        if self.phase == "running":
            return 1.0
        return self._fit_fraction if self.phase == "initialising" else 0.0

    def _on_fit_progress(self, stage: str, fraction: float) -> None:
        self._fit_stage, self._fit_fraction = stage, float(fraction)

    @property
    def initialising(self) -> bool:
        """True while the initialisation thread runs."""
        return self._thread is not None and not self._done.is_set()

    def buffer(self, pixels: np.ndarray, meta: dict[str, Any]) -> bool:
        """Keep a frame for initialisation; True when enough frames are buffered."""
        if self.dims is None:
            self.dims = (int(pixels.shape[0]), int(pixels.shape[1]))
        self.frames.append(np.array(pixels))  # own copy: the message buffer is released
        self.metas.append(meta)
        return len(self.frames) >= self.params.init.init_frames

    def screen(self) -> list[tuple[int, str]]:
        """Drop the buffered frames unfit for the initialisation (NaN/inf, wild values; see
        :mod:`online_cnmfe.model.frame_screen`); returns their (frame_index, reason).

        The buffer then holds fewer than ``init.init_frames`` frames when some were dropped:
        :meth:`buffer` goes on filling it.
        """
        bad = screen_frames(self.frames, self.params.online.max_pixel_excursion_ranges)
        if not bad:
            return []
        dropped = [(int(self.metas[i]["frame_index"]), bad[i]) for i in sorted(bad)]
        self.frames = [f for i, f in enumerate(self.frames) if i not in bad]
        self.metas = [m for i, m in enumerate(self.metas) if i not in bad]
        return dropped

    def start_init(self, n_frames: int | None = None) -> None:
        """Fit the initial model on the buffered frames on a worker thread.

        ``n_frames`` (fewer than ``init.init_frames``): the stream stopped early; initialise
        on the frames there are.
        """
        if n_frames is not None and n_frames != self.params.init.init_frames:
            self.params = self.params.replace(**{"init.init_frames": n_frames})
        movie = np.stack(self.frames)
        self._fit_stage, self._fit_fraction = "starting", 0.0
        self._thread = threading.Thread(
            target=self._initialise, args=(movie,), name="engine-init", daemon=True
        )
        self._thread.start()

    def _initialise(self, movie: np.ndarray) -> None:
        try:
            model = self.model_factory(self.params)
            if hasattr(model, "initialize_from"):
                init = fit_initial(movie, self.params, progress=self._on_fit_progress)
                self._on_fit_progress("starting the online model", 1.0)
                model.initialize_from(init, movie)
                self.init_result = init
                corr, pnr = getattr(init, "corr_image", None), getattr(init, "pnr_image", None)
                if corr is not None and pnr is not None:
                    self.corr_pnr = np.asarray(corr * pnr, np.float32)
            else:
                model.initialize(movie)
            if self.first_free_id and hasattr(model, "reserve_neuron_ids"):
                model.reserve_neuron_ids(self.first_free_id, renumber=True)
            self.model = model
        except Exception as exc:  # noqa: BLE001 - reported by the engine, which stops
            logger.exception("initialisation failed")
            self.init_error = exc
        finally:
            self._done.set()

    def wait_init(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the initialisation thread."""
        self._done.wait(timeout_s)

    def finish_init(self) -> bool:
        """After the worker ended: True when the model is ready (False: see init_error)."""
        if self._thread is None or not self._done.is_set():
            return False
        self._thread = None
        return self.model is not None

    def init_results(self) -> Iterator[tuple[FrameResult, dict[str, Any]]]:
        """One (FrameResult, meta) per initialisation frame, from the batch fit when known."""
        init = self.init_result
        ids = np.asarray(self.model.neuron_ids, np.int64)
        has_traces = init is not None and init.C.shape == (ids.shape[0], len(self.metas))
        zeros = np.zeros(ids.shape[0], np.float32)
        pre = getattr(init, "preprocess", None)
        flags = pre.init.reason_of() if pre is not None and pre.init is not None else []
        for j, meta in enumerate(self.metas):
            if has_traces:
                c, s, c_raw = init.C[:, j], init.S[:, j], init.C_raw[:, j]
            else:
                c = s = c_raw = zeros
            result = FrameResult(
                frame_index=j,
                neuron_ids=ids,
                C=np.asarray(c, np.float32),
                S=np.asarray(s, np.float32),
                C_raw=np.asarray(c_raw, np.float32),
                **init_frame_fields(
                    getattr(init, "motion", None), j, flags[j] if j < len(flags) else None
                ),
            )
            yield result, dict(meta, latency_ms=float("nan"))
        self.frames, self.metas = [], []
