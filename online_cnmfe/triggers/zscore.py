"""Running, causal z-score of raw traces: ``z_t = (x_t - mu_{t-1}) / sigma_{t-1}``, and of their
rises: ``r_t = (x_t - x_{t-1}) / (sqrt(2) sigma_{t-1})`` (the jump a spike makes, which a slowly
decaying transient does not hide).

Per neuron, from the samples up to the previous frame only (so a sample never normalises itself):

- noise ``sigma`` from the mean absolute first difference, ``E|x_t - x_{t-1}| = 2 sigma / sqrt(pi)``
  for white Gaussian noise; differences are winsorised at ``5 x`` the current mean so calcium
  transients (a few large rises) barely move it;
- baseline ``mu`` from an exponential running mean whose steps are clipped to ``+-3 sigma``, so a
  transient lasting n frames moves it by at most ``3 n alpha sigma``.

Both use the step ``alpha_t = max(1 / n_t, alpha)`` (a plain mean while ``n_t < 1 / alpha``, then
exponential forgetting with time constant ``1 / alpha`` frames). ``z`` is 0 until a neuron has
been seen ``warmup`` frames. Arrays are float64, one entry per tracked neuron, updated in place
by :func:`online_cnmfe.triggers._kernels.zscore_update`.
"""

from __future__ import annotations

import math

import numpy as np

from online_cnmfe.triggers._kernels import zscore_update

_SQRT_PI_2 = math.sqrt(math.pi) / 2.0


class RunningZScore:
    """Running baseline and noise of ``n`` traces, updated one frame at a time.

    Parameters
    ----------
    n : int
        Number of traces.
    alpha : float
        Forgetting step (1 / time constant in frames), in (0, 1].
    warmup : int
        Frames a trace must have been seen before its z-score is non-zero.
    """

    __slots__ = ("alpha", "warmup", "n_seen", "n_diff", "mu", "mad", "prev")

    def __init__(self, n: int, alpha: float, warmup: int) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha={alpha!r}; expected (0, 1]")
        self.alpha = float(alpha)
        self.warmup = int(warmup)
        self.n_seen = np.zeros(n, dtype=np.int64)
        self.n_diff = np.zeros(n, dtype=np.int64)  # differences folded into the noise
        self.mu = np.zeros(n)
        self.mad = np.zeros(n)
        self.prev = np.zeros(n)

    def carry_from(self, old: RunningZScore, take: np.ndarray, put: np.ndarray) -> None:
        """Copy the state of ``old`` traces ``take`` into this tracker's traces ``put``."""
        for name in ("n_seen", "n_diff", "mu", "mad", "prev"):
            getattr(self, name)[put] = getattr(old, name)[take]

    def sigma(self) -> np.ndarray:
        """Current noise estimate of each trace (0 before two distinct samples)."""
        return self.mad * _SQRT_PI_2

    def update(self, x: np.ndarray, z_out: np.ndarray, rise: bool = False) -> None:
        """Write the z-scores of samples ``x`` into ``z_out``, then fold ``x`` into the state.

        Parameters
        ----------
        x : ndarray of shape (n,)
            This frame's samples.
        z_out : ndarray of shape (n,), float32
            Output; may be ``x`` itself.
        rise : bool
            Write the z-scored first difference ``(x - x_prev) / (sqrt(2) sigma)`` instead.
        """
        self.update_from(x, np.arange(len(self.mu)), z_out, rise)

    def update_from(
        self, vec: np.ndarray, idx: np.ndarray, z_out: np.ndarray, rise: bool = False
    ) -> None:
        """As :meth:`update` for the samples ``vec[idx]`` (gathered by the kernel, no copy).

        Notes
        -----
        A sample equal to the previous one (a trace clipped at 0 by the non-negative demixing,
        a repeated value) carries no information on the noise and is left out of it; a trace
        is ready once ``warmup`` samples and ``warmup`` informative differences were seen.
        """
        zscore_update(
            vec, idx, self.n_seen, self.n_diff, self.mu, self.mad, self.prev,
            self.alpha, self.warmup, rise, z_out,
        )  # fmt: skip
