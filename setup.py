"""Package list for setuptools (everything else is in pyproject.toml).

``RRLMedSAMLib.bundled`` is a data-only package whose folder is the repository's ``Resources/``
(see ``[tool.setuptools.package-dir]``); package discovery cannot find it there, so it is added here.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["RRLMedSAMLib", "RRLMedSAMLib.*"]), "RRLMedSAMLib.bundled"])
