"""The registration box of the method, in one place.

Network and decoder, spatial transformer, objective, instance optimisation, fine-grid refinement,
ensemble, volume calibration, and :func:`~RRLMedSAMLib.registration.register.register`: the one
path every caller registers a scan through.
"""
