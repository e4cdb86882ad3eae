"""The online CNMF-E model: one object, one verb per frame, constant per-frame cost.

``OnlineCNMFE`` owns the params and the :class:`~.state.ModelState` and is the only
place that knows the update schedule. Per frame (the critical path, all numba kernels):

1. validate the frame (shape, dtype → float32, NaN policy), then preprocess it
   (``preprocessing``: line noise, frame quality, bleaching; a corrupt frame is flagged and
   gets predicted traces without updating the model), then motion correction (``motion/``:
   register to the template, resample; a failed registration flags the frame, which then gets
   traces but does not update the model);
2. ỹ = (I − UWD)(y − b0), then c = argmin_{c≥0} ‖ỹ − Ã c‖² by block-coordinate descent
   warm-started from the previous frame (``traces.py``, ``_kernels/demix.py``);
3. online OASIS AR(1) for all neurons (``_kernels/oasis_online.py``);
4. residual r = ỹ − Ã c into a ring buffer of the last L frames, b0 with forgetting
   (``_kernels/residual.py``);
5. the slow path (:mod:`online_cnmfe.model.slow_path.schedule`): ``observe_frame`` then a
   budgeted ``slow_step``; a returned ``ModelUpdate`` is applied atomically (``updates.py``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future

import numpy as np

from online_cnmfe.model import build as _build
from online_cnmfe.model import deconvolution_online as _deconv
from online_cnmfe.model import motion
from online_cnmfe.model import update_prepare as _prep
from online_cnmfe.model import updates as model_updates
from online_cnmfe.model._kernels import demix as _kd
from online_cnmfe.model._kernels import frame_check as _kf
from online_cnmfe.model._kernels import residual as _kr
from online_cnmfe.model.executors import InlineExecutor
from online_cnmfe.model.frame_result import FrameResult, ModelEvent
from online_cnmfe.model.init_result import InitResult
from online_cnmfe.model.initialization.fit import fit_initial
from online_cnmfe.model.preprocessing import online as _pre
from online_cnmfe.model.slow_path import schedule as slow_schedule
from online_cnmfe.model.state import ModelState
from online_cnmfe.model.state_checks import check_state
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)


class OnlineCNMFE:
    """Online CNMF-E: initialise on a batch of frames, then ``process_frame`` one at a time.

    Parameters
    ----------
    params : CNMFEParams, optional
        Defaults to ``CNMFEParams()``.

    Examples
    --------
    >>> model = OnlineCNMFE()
    >>> model.is_initialized
    False
    """

    def __init__(
        self, params: CNMFEParams | None = None, slow_executor: Executor | None = None
    ) -> None:
        params = CNMFEParams() if params is None else params
        if not isinstance(params, CNMFEParams):
            raise TypeError(f"params must be CNMFEParams, got {type(params).__name__}")
        self.params = params
        self.state: ModelState | None = None
        self._ops: _build.Operators | None = None
        self._slow = slow_schedule if params.detection.enabled else None
        self._pending_events: list[ModelEvent] = []
        self._slow_executor: Executor = slow_executor or InlineExecutor()
        self._inflight: Future | None = None
        self._prepared = None  # the pending update worked out on the slow path's thread
        self._footprints_cache = None
        self._sanity = None  # SanityReport, refreshed every preprocess.sanity_period_s
        self.residual_guard = None  # told before a residual row is overwritten (checkpoints)

    # ---- set-up ------------------------------------------------------------------------
    def initialize(self, frames: np.ndarray, progress: bool = False) -> None:
        """Fit the initial model on ``frames`` (T, H, W) and prepare the online state."""
        frames = _as_movie(frames)
        init = fit_initial(frames, self.params, progress=progress)
        self.initialize_from(init, frames)

    def initialize_from(self, init: InitResult, frames: np.ndarray | None = None) -> None:
        """Build the online state from an :class:`InitResult` (e.g. a truth-derived one).

        Parameters
        ----------
        init : InitResult
        frames : ndarray of shape (T, H, W), optional
            The initialisation frames; used to fill the residual buffer and to start the
            slow path. Frame indices continue at ``init.C.shape[1]``.
        """
        if not isinstance(init, InitResult):
            raise TypeError(f"init must be an InitResult, got {type(init).__name__}")
        if frames is not None:
            frames = _as_movie(frames)
            if frames.shape[1:] != tuple(init.dims):
                raise ValueError(
                    f"frames have shape {frames.shape[1:]} but the InitResult has dims "
                    f"{tuple(init.dims)}; pass the frames the initialisation was fitted on"
                )
        if self.params.detection.matched_filter == "auto" and init.matched_filter is not None:
            # the online search filters the residual as the initialisation's seeding did
            choice = "on" if init.matched_filter else "off"
            self.params = self.params.replace(**{"detection.matched_filter": choice})
        d_fit = init.neuron_diameter_px
        if d_fit is not None and d_fit != self.params.data.neuron_diameter_px:
            logger.info(
                "the online model searches for cells of %.1f px (the initialisation's "
                "measure; data.neuron_diameter_px = %g; set it to skip the refit)",
                d_fit, self.params.data.neuron_diameter_px,
            )  # fmt: skip
            self.params = self.params.with_cells_diameter(float(d_fit))
        pre, frames = _pre.online_start(init, frames, self.params)
        motion_init, frames = motion.online_start(init.motion, frames, self.params)
        self.state, self._ops = _build.build_state(init, frames, self.params)
        _build.warm_up()
        if motion_init is not None:
            self.state.motion = motion.state_from_init(motion_init, init.dims, self.params)
            motion.mask_residual(self.state.motion, self.state.residual)  # the border band
            motion.warm_up()
        if self._slow is not None:
            self.state.slow = self._slow.init_slow_path(init, frames, self.params)
        self._sanity = _pre.attach(self.state, pre, init, self.params)

    # ---- per frame ---------------------------------------------------------------------
    def process_frame(
        self, frame: np.ndarray, on_traces: Callable[[FrameResult], None] | None = None
    ) -> FrameResult:
        """Update the model with one frame and return the outputs for it (all final).

        Parameters
        ----------
        frame : ndarray of shape (H, W)
        on_traces : callable, optional
            Called with a traces-only ``FrameResult`` (no events, timings of the critical path)
            as soon as this frame's traces are final and *before* the slow path (footprint
            refresh, W refresh, detection) runs, so closed-loop rules and publication are not
            delayed by it; the residual buffer and the baseline b0 are updated after it
            returns. The callback must not modify the model.

        Raises
        ------
        RuntimeError
            If the model is not initialised.
        ValueError
            If the frame shape differs from the initialised one.
        TypeError
            If the frame is not a real numeric array.
        """
        st = self._require_state()
        t_start = time.perf_counter()
        y, reason = self._validate(frame, st)
        if y is None:
            return self._skip(st, reason, t_start)
        flag = None if st.pre is None else _pre.preprocess_frame(st.pre, y, self.params.preprocess)
        if flag is not None:  # corrupt: traces predicted, the model is not updated
            return self._flagged(st, y, flag, t_start)
        # Later stages before the demixing (motion) may set `flag`: the frame then gets traces
        # but does not update the model (no residual, no b0 update, no slow path; FrameResult.flag).
        t_valid = time.perf_counter()
        if st.motion is not None:  # register to the template; y becomes the corrected frame
            flag = motion.correct_frame(st.motion, y)
            y = st.motion.registered
            _build.fill_lens_gaps(st, y)  # pixels that saw the lens's margin, not tissue
        t_motion = time.perf_counter()
        ops = self._ops
        _build.background_subtract(st, ops, y)
        t_bg = time.perf_counter()
        A, G = st.A, st.G
        _kd.demix_rhs(
            A.start, A.stop, A.indices, A.data, G.start, G.stop, G.indices, G.data,
            st.scratch_ytilde, st.scratch_zsum, st.scratch_rhs,
        )  # fmt: skip
        _kd.nnls_cd(
            st.q_indptr, st.q_indices, st.q_data, st.q_diag, st.scratch_rhs, st.order,
            self.params.online.n_trace_sweeps, st.c,
        )  # fmt: skip
        t_demix = time.perf_counter()
        _deconv.step(st)
        t_deconv = time.perf_counter()
        c_raw, c_den, s = st.c.copy(), st.c_den.copy(), st.s.copy()
        ids = st.neuron_ids.copy()
        shift, quality = motion.outputs(st.motion)
        if on_traces is not None:  # the traces are final: out before the residual's update
            on_traces(
                FrameResult(
                    frame_index=st.t, neuron_ids=ids, C=c_den, S=s, C_raw=c_raw,
                    footprints_version=st.footprints_version, flag=flag,
                    motion_shift_px=shift, motion_quality=quality,
                    timings_ms={"critical_path": 1e3 * (t_deconv - t_start)},
                )
            )  # fmt: skip
        t_out = time.perf_counter()
        slot = st.residual_head
        if flag is None:
            if self.residual_guard is not None:  # a checkpoint is still copying the buffer
                grew = st.motion is not None and bool(st.motion.band_grew)  # all rows masked
                self.residual_guard.before_write(slot, grew)
            _kr.residual_update(
                A.start, A.stop, A.indices, A.data, G.start, G.stop, G.indices, G.data, st.c,
                st.scratch_ytilde, y, ops.alpha_b0, ops.dims3, st.scratch_ac, st.scratch_gc,
                st.b0, st.residual[slot],
            )  # fmt: skip
            if st.motion is not None:  # pixels shifted in from outside: no data, no detection
                motion.mask_residual(st.motion, st.residual, slot)
            st.residual_frame[slot] = st.t
            st.c_raw_buffer[:, slot] = st.c
            st.c_den_buffer[:, slot] = st.c_den
            st.residual_head = (slot + 1) % st.residual.shape[0]
        st.n_processed += 1
        st.n_flagged += flag is not None
        t_res = time.perf_counter()
        t_wait, t_apply, t_submit = self._run_slow_path(st, y, slot, t_res, flag is None)
        self._sanity = _pre.sanity_tick(self, st) or self._sanity
        events = tuple(self._pending_events)
        self._pending_events.clear()
        result = FrameResult(
            frame_index=st.t,
            neuron_ids=ids,
            C=c_den,
            S=s,
            C_raw=c_raw,
            events=events,
            footprints_version=st.footprints_version,
            flag=flag,
            motion_shift_px=shift,
            motion_quality=quality,
            timings_ms={
                "validate": 1e3 * (t_valid - t_start),
                "motion": 1e3 * (t_motion - t_valid),
                "background": 1e3 * (t_bg - t_motion),
                "demix": 1e3 * (t_demix - t_bg),
                "deconvolve": 1e3 * (t_deconv - t_demix),
                "on_traces": 1e3 * (t_out - t_deconv),
                "residual": 1e3 * (t_res - t_out),
                "slow_wait": 1e3 * (t_wait - t_res),
                "apply_update": 1e3 * (t_apply - t_wait),
                "slow_submit": 1e3 * (t_submit - t_apply),
                "total": 1e3 * (t_submit - t_start),
            },
        )
        st.t += 1
        return result

    def _run_slow_path(
        self, st: ModelState, y: np.ndarray, slot: int, t_now: float, submit: bool = True
    ):
        """The slow path of frame t, after its traces went out (DESIGN.md §4).

        1. wait for the job of frame t-1 (on the slow-path executor; usually long done) and
           apply the ``ModelUpdate`` its step returned;
        2. submit frame t's job — ``observe_frame`` (statistics), one count-bounded
           ``slow_step`` and its update's arithmetic (``update_prepare``) — with copies or
           snapshots of what it reads, and return: with a thread executor it runs while
           frame t+1's critical path does.

        The update of frame t's step is applied after frame t+1's traces, whichever executor
        runs it, so the results do not depend on threads or timing. A flagged frame
        (``submit`` false) applies the pending update but submits no job of its own.
        """
        if self._slow is None or st.slow is None:
            return t_now, t_now, t_now
        self.settle_slow_path()
        t_wait = time.perf_counter()
        update, st.pending_update = st.pending_update, None
        prepared, self._prepared = self._prepared, None
        if update is not None:
            self._pending_events.extend(model_updates.apply_update(self, update, prepared))
        t_apply = time.perf_counter()
        if not submit:
            return t_wait, t_apply, t_apply
        view = model_updates.slow_inputs(self, snapshot=True)
        frame = (st.t, y.copy(), st.c.copy(), st.residual[slot])  # y and c are reused buffers
        base = (st, self._ops, st.n_processed + 1)  # prepare the hand-over there too
        self._inflight = self._slow_executor.submit(
            _prep.slow_job, self._slow, st.slow, frame, view, self.params, base
        )
        return t_wait, t_apply, time.perf_counter()

    def settle_slow_path(self) -> None:
        """Wait for the slow-path step in flight; its update is kept in ``state.pending_update``
        (applied after the next frame's traces). Call before copying or saving the state."""
        if self._inflight is not None:
            future, self._inflight = self._inflight, None
            st = self._require_state()
            st.pending_update, self._prepared = future.result()

    def after_slow_steps(self, fn: Callable, *args) -> Future:
        """``fn(*args)`` on the slow path's executor, after the steps so far, before later ones."""
        return self._slow_executor.submit(fn, *args)

    def run_slow_path_on(self, executor: Executor | None) -> None:
        """Run the slow path's steps on ``executor`` (e.g. a one-thread
        ``ThreadPoolExecutor``) or, with None, inline on the calling thread. Results are
        identical either way."""
        if self.state is not None:
            self.settle_slow_path()
        self._slow_executor = executor or InlineExecutor()

    def slow_inputs(self):
        """The read-only view of the model the slow path works on (``SlowPathInputs``)."""
        return model_updates.slow_inputs(self)

    def _validate(self, frame, st: ModelState) -> tuple[np.ndarray | None, str]:
        """The frame as the model's float32 vector, or (None, why it is skipped)."""
        frame = np.asarray(frame)
        if frame.shape != tuple(st.dims):
            raise ValueError(
                f"frame {st.t} has shape {frame.shape}; the model was initialised on "
                f"{tuple(st.dims)}. Feed frames of the initialised size (same session, same "
                "crop/binning) or re-initialise on the new size."
            )
        if frame.dtype.kind not in "uif":
            raise TypeError(f"frame {st.t} has dtype {frame.dtype}; expected a real number type")
        y = self._ops.frame_buf  # the model's own float32 copy: no allocation per frame
        np.copyto(y.reshape(st.dims), frame, casting="unsafe")
        lo_ok, hi_ok = st.pixel_limits
        if frame.dtype.kind != "f" and _dtype_within(frame.dtype, lo_ok, hi_ok):
            return y, ""  # every value of this integer type is accepted: no pass needed
        stats = self._ops.frame_stats
        _kf.finite_range(y, stats)
        if stats[2]:
            if self.params.online.nan_policy == "skip":
                return None, "frame contains NaN or infinite pixels"
            bad = ~np.isfinite(y)
            y[bad] = st.b0[bad]
        if stats[0] < lo_ok or stats[1] > hi_ok:
            worst = stats[0] if stats[0] < lo_ok else stats[1]
            return None, (
                f"pixel value {worst:.4g} outside the accepted [{lo_ok:.4g}, {hi_ok:.4g}] "
                "(online.max_pixel_excursion_ranges x the range of the initialisation frames)"
            )
        return y, ""

    def _skip(self, st: ModelState, reason: str, t_start: float) -> FrameResult:
        st.n_skipped += 1
        result = FrameResult(
            frame_index=st.t,
            neuron_ids=st.neuron_ids.copy(),
            C=st.c_den.copy(),
            S=np.zeros_like(st.s),
            C_raw=st.c.copy(),
            skipped=True,
            skip_reason=reason,
            footprints_version=st.footprints_version,
            timings_ms={"total": 1e3 * (time.perf_counter() - t_start)},
        )
        st.t += 1
        return result

    def _flagged(self, st: ModelState, y, reason: str, t_start: float) -> FrameResult:
        """A frame unusable for the model (corrupt): the one-step AR(1) prediction of the
        traces, ``S`` = 0; OASIS does not advance, nothing learns from the frame. The slow
        path's pending update is applied as on any flagged frame (no job is submitted)."""
        st.n_flagged += 1
        ids, c_den, c_raw = st.neuron_ids.copy(), st.c_den * st.g, st.c * st.g
        t_now = time.perf_counter()
        self._run_slow_path(st, y, st.residual_head, t_now, False)
        events = tuple(self._pending_events)
        self._pending_events.clear()
        result = FrameResult(
            frame_index=st.t, neuron_ids=ids, C=c_den, S=np.zeros_like(c_den), C_raw=c_raw,
            events=events, footprints_version=st.footprints_version, flag=reason,
            timings_ms={"total": 1e3 * (time.perf_counter() - t_start)},
        )  # fmt: skip
        st.t += 1
        return result

    @property
    def sanity(self):
        """The latest plausibility check (``preprocessing.sanity.SanityReport``) or None."""
        return self._sanity

    # ---- persistence (files: online_cnmfe.results.state_file) ----------------------------
    @classmethod
    def from_state(cls, params: CNMFEParams, state: ModelState) -> OnlineCNMFE:
        """A model continuing from a complete ``state`` (e.g. read back from a state file).

        Raises
        ------
        StateError
            (a ValueError) If the state's arrays disagree in shape or an index points outside.
        """
        if not isinstance(state, ModelState):
            raise TypeError(f"state must be a ModelState, got {type(state).__name__}")
        check_state(state)  # the kernels do not bound-check: a bad index must stop here
        if state.motion is not None:
            motion.check_motion_state(state.motion, state.dims, params)
        model = cls(params)
        model.state = state
        model._ops = _build.operators_for(state, params)
        _build.warm_up(slow_path=state.slow is not None)
        if state.motion is not None:
            motion.warm_up()
        return model

    def reserve_neuron_ids(self, first_free: int, *, renumber: bool = False) -> None:
        """Make every neuron id issued from now on at least ``first_free``.

        ``--resume`` appends to a results file whose rows are keyed by neuron id: an id the
        file already holds must never name another cell. With ``renumber`` (a model freshly
        initialised for that file) the current ids are shifted up by ``first_free`` too.
        """
        st = self._require_state()
        first_free = int(first_free)
        if first_free < 0:
            raise ValueError(f"first_free must be >= 0, got {first_free}")
        if renumber:
            st.neuron_ids += first_free
            st.next_id += first_free
        st.next_id = max(int(st.next_id), first_free, int(st.neuron_ids.max(initial=-1)) + 1)

    # ---- read access -------------------------------------------------------------------
    def _require_state(self) -> ModelState:
        if self.state is None:
            raise RuntimeError("the model is not initialised: call initialize or initialize_from")
        return self.state

    @property
    def is_initialized(self) -> bool:
        return self.state is not None

    @property
    def dims(self) -> tuple[int, int]:
        return tuple(self._require_state().dims)

    @property
    def n_components(self) -> int:
        return self._require_state().n_components

    @property
    def neuron_ids(self) -> np.ndarray:
        """Stable ids of the current components (never reused), int64 (K,)."""
        return self._require_state().neuron_ids

    @property
    def birth_frames(self) -> np.ndarray:
        return self._require_state().birth_frame

    @property
    def footprints(self):
        """A as scipy.sparse.csc_array (n_pixels × K), pixels row-major (cached copy)."""
        st = self._require_state()
        key = (st.footprints_version, st.n_components, id(st))
        if self._footprints_cache is None or self._footprints_cache[0] != key:
            self._footprints_cache = (key, st.A.to_csc())
        return self._footprints_cache[1]

    @property
    def b0(self) -> np.ndarray:
        st = self._require_state()
        return st.b0.reshape(st.dims)

    @property
    def footprints_version(self) -> int:
        return self._require_state().footprints_version

    @property
    def frame_index(self) -> int:
        """Index of the next frame to be processed."""
        return self._require_state().t

    @property
    def summary_images(self) -> dict[str, np.ndarray]:
        """Display images (H, W): baseline, max footprint, residual std over the buffer."""
        st = self._require_state()
        filled = st.residual[st.residual_frame >= 0]
        std = filled.std(axis=0) if len(filled) else np.zeros(st.n_pixels, np.float32)
        A = self.footprints
        amax = A.max(axis=1).toarray().ravel() if st.n_components else np.zeros(st.n_pixels)
        return {
            "baseline": st.b0.reshape(st.dims).copy(),
            "footprints_max": np.asarray(amax, np.float32).reshape(st.dims),
            "residual_std": np.asarray(std, np.float32).reshape(st.dims),
        }


@functools.lru_cache(maxsize=64)
def _dtype_within(dtype: np.dtype, lo: float, hi: float) -> bool:
    """Whether every value of the integer ``dtype`` lies in [lo, hi]."""
    info = np.iinfo(dtype)
    return lo <= info.min and info.max <= hi


def _as_movie(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must have shape (T, H, W); got {frames.shape}")
    if frames.dtype.kind not in "uif":
        raise TypeError(f"frames have dtype {frames.dtype}; expected a real number type")
    return frames
