"""The registration box of the method, in one place.

Network and decoder, spatial transformer, objective, instance optimisation, the fine stage
(MIND-SSC features, level plan, objective, coarse-to-fine optimisation), ensemble, volume
calibration, and :func:`~RRLMedSAMLib.registration.register.register`: the one path every caller
registers a scan through.
"""
