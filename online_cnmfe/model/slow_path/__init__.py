"""The slow path: work amortised over frames, off the traces' critical path.

Sufficient statistics with forgetting (:mod:`.suffstats`), footprint refresh and ring-W refresh
(:mod:`.ring_refresh`), new-neuron detection on the residual (:mod:`.detection`), online merging
(:mod:`.merging`); :mod:`.schedule` decides what runs on which frame and hands the model one
:class:`~.update.ModelUpdate` at a time.
"""
