"""psmadose: pre-therapy prediction of 177Lu-PSMA absorbed doses from PSMA PET/CT.

Research and teaching software. The bundled model is trained on virtual patients and is not
clinically validated.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("psmadose")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
