"""psmadose: pre-therapy prediction of 177Lu-PSMA absorbed doses from PSMA PET/CT.

Research and teaching software. The bundled model is trained on virtual patients and is not
clinically validated.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("psmadose")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

# The one statement of what this software is, shown by the CLI, the reports and the Slicer module.
BANNER = ("Research and teaching software: model trained on virtual patients, not clinically validated. "
          "Not for treatment decisions.")

__all__ = ["BANNER", "__version__"]
