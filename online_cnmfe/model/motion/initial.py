"""The motion stage at initialisation: template by iterative registration, registered batch.

:func:`register_initial` (called by :func:`~online_cnmfe.model.initialization.fit.fit_initial`
before the CNMF-E fit):

1. band-passed registration image of every initialisation frame;
2. template = their mean, then ``template_iterations`` times: register every frame to it, and
   average the well-registered frames shifted back — anchored at their median shift, so
   shifts are relative to the median position over the initialisation frames;
3. the frames' final shifts and qualities (a frame below ``min_informative``, the quality
   frames reach against an unrelated template, keeps the last informative shift);
   ``min_quality`` calibrated as ``min_quality_ratio`` × their median unless given; frames
   beyond ``max_shift_px`` or below it are flagged;
4. unless there is too little stable structure to register to (``MotionInit.active``:
   the templates of the odd and of the even frames disagree, or most frames match the
   template no better than chance; motion correction is then off for the recording, with a
   warning), the frames resampled in place; pixels shifted in from outside replicate the edge
   (``_kernels/warp``; the border band they lie in gets no seed); a flagged frame is replaced
   by the nearest unflagged one for the fit (its traces are flagged in the results).

:func:`apply_initial` repeats step 4 on the initialisation frames given to
``OnlineCNMFE.initialize_from`` (the residual buffer and the slow path start from them) and
:func:`state_from_init` builds the online :class:`MotionState`.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from online_cnmfe.errors import OnlineCNMFEError
from online_cnmfe.model._kernels import registration as kr
from online_cnmfe.model._kernels import warp as kw
from online_cnmfe.model.motion import lens_gaps, piecewise, register
from online_cnmfe.model.motion.state import (
    MIN_INFORMATIVE_FRACTION,
    MIN_RELIABILITY,
    MotionInit,
    MotionState,
    border_band,
    geometry,
    lens_weight,
)
from online_cnmfe.model.motion.still import still_limit
from online_cnmfe.params import CNMFEParams

logger = logging.getLogger(__name__)

GOOD_RATIO = 0.5  # frames under this x the median quality are left out of the template
# an untrusted initialisation frame whose residual energy (what it does not share with the
# template) is at most this x the trusted frames' median is weak, not foreign (_hold_untrusted)
WEAK_RESIDUAL = 2.0
# ... and kept (at their median shift) when this many nearest trusted frames agree on the
# position within this many pixels (the tissue stood still around it)
STILL_NEIGHBOURS = 6
STILL_SPREAD_PX = 1.0


def _geometry(dims, params: CNMFEParams):
    geom = geometry(dims, params.motion, params.data.neuron_diameter_px)
    reach = min(geom.search) * geom.ds
    if reach < params.motion.max_shift_px:
        logger.warning(
            "motion: frames of %dx%d allow shifts up to %d px, less than max_shift_px=%g; larger "
            "shifts are flagged",
            dims[0], dims[1], reach, params.motion.max_shift_px,
        )  # fmt: skip
    return geom


def _measure_all(ms: MotionState, BP: np.ndarray, patches: bool, hold: bool = False,
                 spectra: dict | None = None, index: np.ndarray | None = None):  # fmt: skip
    """Rigid (dy, dx, quality) in grid pixels, edge flags and (patch fields) of every frame.

    With ``hold``, a frame under ``ms.min_informative`` takes the last informative shift (and
    field), as online (``register.correct_frame``). ``spectra``: the frames' spectra cache
    (``register.measure``), keyed by ``index[t]`` (default t), frame t's index in it.
    """
    T = BP.shape[0]
    rigid = np.zeros((T, 3), np.float64)
    edge = np.zeros(T, bool)
    fields = None
    ms.held[:] = np.nan
    if patches and ms.patches is not None:
        fields = np.zeros((T, 2, *ms.patches.shape), np.float32)
    for t in range(T):
        np.copyto(ms.scratch_bp, BP[t])
        kr.taper_into(ms.scratch_bp, ms.taper, ms.scratch_xin)
        edge[t] = register.measure(ms, spectra, t if index is None else int(index[t]))
        informative = not edge[t] and (not hold or ms.scratch_rigid[2] >= ms.min_informative)
        if informative:  # the coarse search keeps near the last shift (register.measure)
            ms.held[:] = ms.scratch_rigid[:2] * ms.ds
        elif hold and np.isfinite(ms.held[0]):
            ms.scratch_rigid[:2] = ms.held / ms.ds
        rigid[t] = ms.scratch_rigid
        if fields is not None:
            if informative or t == 0:
                piecewise.measure_patches(ms)
            fields[t, 0], fields[t, 1] = ms.patches.field_y, ms.patches.field_x
    return rigid, edge, fields


def _null_quality(ms: MotionState, BP: np.ndarray, spectra: dict | None = None) -> float:
    """95th percentile of the frames' quality against the template turned by 180 degrees.

    What a frame reaches against a template it does not match: below it, a frame's best
    shift is chance.
    """
    template = ms.template.copy()
    _set_template(ms, template[::-1, ::-1])
    rigid, _, _ = _measure_all(ms, BP, patches=False, spectra=spectra)
    _set_template(ms, template)
    return float(np.percentile(rigid[:, 2], 95))


def _good(rigid: np.ndarray, edge: np.ndarray) -> np.ndarray:
    q = rigid[:, 2]
    ok = ~edge & np.isfinite(q)
    if not ok.any():
        return ok
    return ok & (q >= GOOD_RATIO * np.median(q[ok]))


def _anchor(rigid: np.ndarray, good: np.ndarray) -> np.ndarray:
    """The median shift of the good frames: the template's position (robust to jumps)."""
    return np.median(rigid[good, :2], axis=0)


def _average(BP: np.ndarray, shifts: np.ndarray, good: np.ndarray, ms: MotionState):
    """Mean of the good frames' registration images shifted back by ``shifts`` (grid)."""
    h, w = ms.grid
    total = np.zeros(h * w, np.float64)
    count = np.zeros(h * w, np.float64)
    for t in np.flatnonzero(good):
        kw.warp_rigid(BP[t].reshape(-1), h, w, shifts[t, 0], shifts[t, 1], ms.scratch_warp,
                      ms.scratch_valid)  # fmt: skip
        np.add(total, ms.scratch_warp, out=total, where=ms.scratch_valid.view(bool))
        count += ms.scratch_valid
    return (total / np.maximum(count, 1)).reshape(h, w).astype(np.float32)


def _build_template(BP: np.ndarray, pick: np.ndarray, ms: MotionState, iterations: int,
                    spectra: dict | None = None):  # fmt: skip
    """Template of the frames ``pick`` by iterative registration (anchored at their median)."""
    sub = BP if pick.all() else BP[pick]  # one copy (read only), not one per use
    template = sub.mean(axis=0)
    index = np.flatnonzero(pick)
    for _ in range(iterations):
        _set_template(ms, template)
        rigid, edge, _ = _measure_all(ms, sub, False, spectra=spectra, index=index)
        good = _good(rigid, edge)
        if not good.any():
            break
        template = _average(sub, rigid[:, :2] - _anchor(rigid, good), good, ms)
    return template


def _split_half(BP: np.ndarray, ms: MotionState, iterations: int, spectra=None) -> float:
    """Registration quality of the even frames' template against the odd frames' one.

    The two templates are built independently, so noise the registration fitted in one is
    absent from the other, and compared where they should coincide (within a grid pixel: both
    are anchored at the median position of interleaved frames), so chance correlations at
    other shifts do not count: near 1 when the frames share stable structure, low for frames
    of noise (registering noise to its own mean only fits the noise).
    """
    T = BP.shape[0]
    even, odd = np.arange(T) % 2 == 0, np.arange(T) % 2 == 1
    if not odd.any():
        return 1.0
    a = _build_template(BP, even, ms, iterations, spectra)
    b = _build_template(BP, odd, ms, iterations, spectra)
    _set_template(ms, b)
    np.copyto(ms.scratch_bp, a)
    kr.taper_into(ms.scratch_bp, ms.taper, ms.scratch_xin)
    ms.held[:] = np.nan
    search = ms.search.copy()
    ms.search[:] = 1  # both sit at the median position of interleaved frames: no search
    register.measure(ms)
    ms.search[:] = search
    return float(ms.scratch_rigid[2])


def _hold_untrusted(ms, shifts, quality, edge, fields, energy2) -> tuple[str, ...]:
    """Per frame, why it is flagged; weak frames where the tissue stood still are kept.

    Trusted: quality at least ``min_quality`` (and ``min_informative``), the peak inside the
    search window and within ``max_shift_px``. An untrusted frame is *weak* when what it does
    not share with the template is no more than what a trusted frame does not share: its
    residual energy ‖x‖² (1 − q²) (x its registration image, q its quality) is at most
    ``WEAK_RESIDUAL`` × the trusted frames' median. It then lacks the template's structure
    without carrying anything else (e.g. the first frames of a movie whose cells are not yet
    active: quality 0.06-0.25 against a median 0.65, a third of the usual energy), and its
    own shift is unreliable (chance peaks of up to 20 px, errors of a pixel above chance).
    When the ``STILL_NEIGHBOURS`` nearest trusted frames (in time) agree on the position
    within ``STILL_SPREAD_PX`` the tissue stood still around it: it takes their median shift
    and is used as itself, unflagged (a copy of a neighbour would put that neighbour's
    activity in its place: −0.016 F1 on the held-out still movie). Where the tissue moved,
    its position is unknown and, like any other untrusted frame (foreign content, e.g. a
    frame of noise, or a shift beyond the correctable range), it is flagged and replaced by
    its nearest unflagged neighbour in the fit (``_warp_movie``; misplaced by a pixel or more,
    such frames cost 0.017 F1 on the held-out moving movie). ``shifts`` (T, 2) and ``fields``
    (T, 2, ny, nx) are written in place.
    """
    measured = tuple(
        register.flag_reason(ms, float(dy), float(dx), float(q), bool(e)) or ""
        for (dy, dx), q, e in zip(shifts, quality, edge)
    )
    q = np.where(np.isfinite(quality), quality, 0.0)
    beyond = edge | (np.hypot(shifts[:, 0], shifts[:, 1]) > ms.max_shift_px)
    trusted = (q >= ms.min_informative) & ~beyond & (q >= ms.min_quality)
    if not trusted.any():
        return measured
    residual = energy2 * (1.0 - np.clip(q, 0.0, 1.0) ** 2)
    weak = ~trusted & (residual <= WEAK_RESIDUAL * np.median(residual[trusted]))
    weak &= ~((q >= ms.min_informative) & beyond)  # a clear match beyond the range
    idx = np.flatnonzero(trusted)
    kept = np.zeros(shifts.shape[0], bool)
    for t in np.flatnonzero(weak):
        near = idx[np.argsort(np.abs(idx - t), kind="stable")[:STILL_NEIGHBOURS]]
        around = shifts[near]
        if (around.max(axis=0) - around.min(axis=0)).max() > STILL_SPREAD_PX:
            continue  # the tissue moved around it: its position is unknown
        shifts[t] = np.median(around, axis=0)
        if fields is not None:
            fields[t] = fields[near[0]]
        kept[t] = True
    return tuple("" if kept[i] else f for i, f in enumerate(measured))


def register_initial(Y: np.ndarray, params: CNMFEParams, fov: np.ndarray | None = None
                     ) -> MotionInit:  # fmt: skip
    """Build the template from the frames Y (T, H, W) float32 and register Y in place.

    ``fov`` (H, W) bool, the lens's field of view on the raw frames when preprocessing found
    a lens margin: its edge is left out of the registration (``state.lens_weight``).

    Frames too small to register, or without stable structure, leave Y as it is and return an
    inactive MotionInit (``active`` False), with a warning.

    Raises
    ------
    OnlineCNMFEError
        If every frame fails the registration (``motion.min_quality`` too high?).
    """
    T, H, W = Y.shape
    mp = params.motion
    try:
        geom = _geometry((H, W), params)
    except ValueError as exc:  # a tiny crop: nothing to register, the model still runs
        logger.warning("motion correction is off for this recording: %s", exc)
        nan = np.full((T, 2), np.nan, np.float32)
        return MotionInit(
            template=np.zeros((0, 0), np.float32), min_quality=1.0, shifts=nan,
            quality=nan[:, 0].copy(), fields=None, flags=("",) * T, reliability=0.0,
        )  # fmt: skip
    ms = register.make_state(geom, params, np.zeros(geom.grid, np.float32), -1.0)
    if fov is not None:
        ms.lens = lens_weight(np.asarray(fov, bool), geom)
    BP = np.empty((T, *geom.grid), np.float32)
    for t in range(T):
        register.bandpass(ms, Y[t].reshape(-1))
        BP[t] = ms.scratch_bp
    # every pass below registers the same frames (to other templates): their spectra at each
    # taper position are computed once (``register.measure``; the same results)
    spectra: dict = {}
    # the check of the odd against the even frames' template on a second thread, on a state
    # (scratch) and a spectra cache of its own, while this one builds the template of all
    ms_half = register.make_state(geom, params, np.zeros(geom.grid, np.float32), -1.0)
    ms_half.lens = ms.lens
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="motion-split-half") as pool:
        half = pool.submit(_split_half, BP, ms_half, mp.template_iterations, {})
        template = _build_template(BP, np.ones(T, bool), ms, mp.template_iterations, spectra)
        reliability = half.result()
    del ms_half
    _set_template(ms, template)
    ms.min_informative = _null_quality(ms, BP, spectra)
    rigid, edge, fields = _measure_all(ms, BP, patches=True, hold=True, spectra=spectra)
    del spectra
    energy2 = np.array([kr.taper_into(bp, ms.taper, ms.scratch_xin) for bp in BP])
    del BP
    shifts = (rigid[:, :2] * geom.ds).astype(np.float32)
    quality = rigid[:, 2].astype(np.float32)
    ok = ~edge & np.isfinite(quality)
    median_q = float(np.median(quality[ok])) if ok.any() else 0.0
    ms.min_quality = (
        mp.min_quality if mp.min_quality is not None else mp.min_quality_ratio * median_q
    )
    flags = _hold_untrusted(ms, shifts, quality, edge, fields, energy2)
    good = np.array([not f for f in flags], bool)
    limit = still_limit(shifts, good, fields)
    if limit > 0:  # the tissue stood still: no correction (its shifts are noise)
        shifts[good] = 0.0
        if fields is not None:
            fields[good] = 0.0
    moved = (shifts[good, 0], shifts[good, 1]) if fields is None else (
        fields[good, 0], fields[good, 1])  # fmt: skip
    init = MotionInit(
        template=ms.template.copy(), min_quality=float(ms.min_quality), shifts=shifts,
        quality=quality, fields=fields, flags=flags, reliability=reliability,
        min_informative=float(ms.min_informative),
        informative_fraction=float(np.mean(quality > ms.min_informative)),
        band=border_band(*moved, register.band_cap(mp.max_shift_px)), lens=ms.lens,
        still_limit_px=limit, lens_outside=None if fov is None else ~np.asarray(fov, bool),
    )  # fmt: skip
    if not init.active:
        logger.warning(
            "motion correction is off for this recording: its initialisation frames show too "
            "little stable structure to register to (the templates of the odd and of the even "
            "frames match with quality %.2f, need %.2f; %.0f %% of the frames match the "
            "template better than chance, need %.0f %%); the frames are used as they are. Set "
            "motion.enabled=false to silence this, or initialise on frames with visible tissue",
            reliability, MIN_RELIABILITY, 100 * init.informative_fraction,
            100 * MIN_INFORMATIVE_FRACTION,
        )  # fmt: skip
        return init
    _warp_movie(Y, init, ms, 0)
    n_flagged = sum(1 for f in flags if f)
    logger.info(
        "motion: template from %d frames; shifts up to %.1f px (rms %.2f), median quality "
        "%.2f (flagged under %.2f, uninformative under %.2f), %d frames flagged%s",
        T, float(np.abs(shifts).max(initial=0)), float(np.sqrt((shifts**2).sum(1).mean())),
        median_q, ms.min_quality, ms.min_informative, n_flagged,
        f"; the tissue stood still: no correction until a shift beyond {limit:.2f} px"
        if limit > 0 else "",
    )  # fmt: skip
    return init


def _set_template(ms: MotionState, template: np.ndarray) -> None:
    np.copyto(ms.template, template)
    register.refresh_spectra(ms)


def _warp_movie(Y: np.ndarray, init: MotionInit, ms: MotionState, offset: int) -> None:
    """Resample Y (T', H, W) in place with the shifts of init frames offset … offset + T'."""
    T, H, W = Y.shape
    flagged = np.array([bool(f) for f in init.flags[offset : offset + T]], bool)
    if flagged.all():
        raise OnlineCNMFEError(
            f"all {T} initialisation frames failed motion registration (threshold "
            f"{init.min_quality:.2f}); lower motion.min_quality, raise motion.max_shift_px or "
            "set motion.enabled=false for a registered movie"
        )
    buf = np.empty(H * W, np.float32)
    gaps = lens_gaps.InitialGaps(init, T, H * W) if lens_gaps.InitialGaps.wanted(init) else None
    for t in range(T):
        y = Y[t].reshape(-1)
        dy, dx = init.shifts[offset + t]
        field = None if init.fields is None else init.fields[offset + t]
        lens_gaps.warp_like(ms, y, dy, dx, field, buf, ms.valid)
        y[:] = buf
        if gaps is not None:  # the samples outside the lens (dark margin): filled below
            gaps.record(t, ms, dy, dx, field, buf, bool(flagged[t]))
    if gaps is not None:
        n = gaps.fill(Y)
        logger.debug("motion: %d initialisation pixels outside the lens filled", n)
    good = np.flatnonzero(~flagged)
    for t in np.flatnonzero(flagged):
        Y[t] = Y[good[np.argmin(np.abs(good - t))]]


def online_start(init: MotionInit | None, frames, params: CNMFEParams):
    """(MotionInit, the frames registered) for ``OnlineCNMFE.initialize_from``; (None, frames)
    when motion correction is off or has nothing to register to.

    ``init`` is the InitResult's motion (None for an InitResult fitted with motion off or
    derived from a truth): the template is then built from the frames now.
    """
    if not params.motion.enabled:
        return None, frames
    if init is not None:
        if not init.active:  # nothing stable to register to (logged at the fit)
            return None, frames
        if frames is None:
            return init, None
        return init, apply_initial(init, frames, params)
    if frames is None:
        raise ValueError(
            "motion.enabled=true needs the initialisation frames to build the motion "
            "template (this InitResult has none); pass them, or set motion.enabled=false "
            "for a movie registered beforehand"
        )
    registered = np.array(frames, dtype=np.float32)
    init = register_initial(registered, params)
    return (init, registered) if init.active else (None, frames)


def apply_initial(init: MotionInit, frames: np.ndarray, params: CNMFEParams) -> np.ndarray:
    """A registered float32 copy of initialisation frames (T', H, W), T' ≤ len(init.shifts).

    The frames are the last T' of those ``init`` was built on (as ``initialize_from`` allows).
    """
    Y = np.array(frames, dtype=np.float32)
    T0 = init.shifts.shape[0]
    if Y.shape[0] > T0:
        raise ValueError(
            f"{Y.shape[0]} initialisation frames given but the motion registration covers "
            f"{T0}; pass the frames the initialisation was fitted on"
        )
    ms = state_from_init(init, Y.shape[1:], params)
    _warp_movie(Y, init, ms, T0 - Y.shape[0])
    return Y


def state_from_init(init: MotionInit, dims, params: CNMFEParams) -> MotionState:
    """The online motion state continuing from the initialisation (``init.active``)."""
    geom = geometry(tuple(int(d) for d in dims), params.motion, params.data.neuron_diameter_px)
    if geom.grid != init.template.shape:
        raise ValueError(
            f"the motion template has shape {init.template.shape}; frames of {tuple(dims)} with "
            f"these parameters need {geom.grid}. Use the parameters of the initialisation."
        )
    ms = register.make_state(geom, params, init.template, init.min_quality, init.min_informative)
    ms.band[:] = init.band
    if init.lens is not None:
        if init.lens.shape != geom.grid:
            raise ValueError(
                f"the motion lens weight has shape {init.lens.shape}; the template's grid is "
                f"{geom.grid}. Use the initialisation's own motion result."
            )
        ms.lens = np.ascontiguousarray(init.lens, np.float32)
    lens_gaps.attach(ms, init.lens_outside)
    ms.still_limit_px = float(init.still_limit_px)
    good = [j for j, f in enumerate(init.flags) if not f]
    if good:
        ms.held[:] = init.shifts[good[-1]]
        ms.last[:2], ms.last[2] = init.shifts[good[-1]], init.quality[good[-1]]
    return ms


def init_frame_fields(motion: MotionInit | None, j: int, flag: str | None = None) -> dict:
    """FrameResult fields (shift, quality, flag) of initialisation frame j.

    ``flag`` is an earlier stage's (preprocessing's) flag of the frame: it comes first; the
    motion registration's flag otherwise.
    """
    if motion is None or not motion.active or j >= motion.shifts.shape[0]:
        return {"flag": flag}
    dy, dx = motion.shifts[j]
    return {
        "motion_shift_px": (float(dy), float(dx)),
        "motion_quality": float(motion.quality[j]),
        "flag": flag or motion.flags[j] or None,
    }
