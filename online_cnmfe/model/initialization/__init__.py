"""The initial batch CNMF-E fit on the first frames (:func:`~.fit.fit_initial`).

Summary images and seeding (:mod:`.summary_images`, :mod:`.seeding`), the ring background
(:mod:`.background`), footprint and trace HALS (:mod:`.footprints`), AR estimation and batch
deconvolution (:mod:`.deconvolution`), merging (:mod:`.merging`), and the acceptance tests of
fitted components (:mod:`.acceptance`, :mod:`.out_of_focus`, :mod:`.checks`).
"""

import os

# numba's parallel kernels run on OpenMP (its "omp" threading layer), whose default wait policy
# lets a thread spin at each barrier while its partner is descheduled: on a shared 2-core
# machine that spin cost a 608² fit a third of its CPU, and its wall time with it
# (BENCHMARKS.md, "Initialisation at 608², fourth pass"). Every parallel kernel of the package
# belongs to this initialisation (the online path has none), so the passive policy set here,
# before the first one loads the OpenMP runtime, changes nothing else; a value already in the
# environment is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
