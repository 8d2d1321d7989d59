"""Extension-level resources, shipped inside the engine as the data package ``RRLMedSAMLib.bundled``.

``pyproject.toml`` maps that package to this folder, so the model manifest (``models/``) and the
embedded sample data (``SampleData/``) exist once, here, and the installed engine finds them with
``importlib.resources``. The icon and screenshots stay outside the package (Slicer's extension
packaging reads them from this folder).
"""
