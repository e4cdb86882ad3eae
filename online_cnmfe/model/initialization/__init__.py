"""The initial batch CNMF-E fit on the first frames (:func:`~.fit.fit_initial`).

Summary images and seeding (:mod:`.summary_images`, :mod:`.seeding`), the ring background
(:mod:`.background`), footprint and trace HALS (:mod:`.footprints`), AR estimation and batch
deconvolution (:mod:`.deconvolution`), merging (:mod:`.merging`), and the acceptance tests of
fitted components (:mod:`.acceptance`, :mod:`.out_of_focus`, :mod:`.checks`).
"""
