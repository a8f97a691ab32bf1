"""DICOM import: PET series to SUV (QIBA vendor-neutral rules), CT series to HU, RTSTRUCT/SEG to named masks.

pydicom (and highdicom for SEG) are imported only when a function here reads files.
"""

from .suv import METHODS, SuvFactors, suv_factors

__all__ = ["METHODS", "SuvFactors", "suv_factors"]
