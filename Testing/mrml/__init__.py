"""MRML adapter tests on Slicer's MRML layer through the PyPI package slicer-core (marker ``mrml``)."""
