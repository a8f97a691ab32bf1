"""Virtual-patient simulator: physiology-grounded PSMA PET/CT cases with known 177Lu doses.

``parameters`` (the table with sources) -> ``patient`` (latent patient and ground-truth doses) -> ``render``
(images) -> ``cohort`` (presets, case directories). ``calibration`` compares cohorts with published figures.
"""
