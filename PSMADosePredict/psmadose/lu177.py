"""Lu-177 decay data (ICRP-107, read from the icrp107-database package) and MIRD self-dose.

Nothing here is typed in: half-life and mean emitted energies come from ICRP Publication 107 through
``icrp107_database``. Self-dose assumes local absorption of all electron energy (beta, internal conversion,
Auger) and no photon absorption, the usual approximation for organ and lesion self-dose of Lu-177 at
these sizes (photons add a few percent in organs of ~150 mL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

JOULE_PER_MEV = 1.602176634e-13  # exact, SI 2019
ELECTRON_EMISSIONS = ("beta-", "IE", "auger")
PHOTON_EMISSIONS = ("gamma", "X")


@dataclass(frozen=True)
class DecayData:
    nuclide: str
    half_life_h: float
    electron_energy_mev: float  # mean energy emitted per decay as electrons (beta-, IC, Auger)
    photon_energy_mev: float
    source: str

    @property
    def decay_constant_per_h(self) -> float:
        return math.log(2) / self.half_life_h

    @property
    def self_dose_gy_g_per_mbq_h(self) -> float:
        """Absorbed dose in Gy to 1 g from 1 MBq*h of decays with full local electron absorption."""
        return self.electron_energy_mev * JOULE_PER_MEV * 1e6 * 3600.0 * 1000.0


@cache
def decay_data(nuclide: str = "Lu-177") -> DecayData:
    from icrp107_database import get_icrp107_spectrum

    def mean_energy(kind: str) -> float:
        spectrum = get_icrp107_spectrum(nuclide, kind)
        return float((spectrum["energies"] * spectrum["weights"]).sum())

    spectrum = get_icrp107_spectrum(nuclide, "beta-")
    unit_h = {"s": 1 / 3600.0, "m": 1 / 60.0, "h": 1.0, "d": 24.0, "y": 24.0 * 365.25}[spectrum["time_unit"]]
    return DecayData(
        nuclide=nuclide,
        half_life_h=float(spectrum["half_life"]) * unit_h,
        electron_energy_mev=sum(mean_energy(k) for k in ELECTRON_EMISSIONS),
        photon_energy_mev=sum(mean_energy(k) for k in PHOTON_EMISSIONS),
        source="ICRP Publication 107 via the icrp107-database package",
    )


def self_dose_gy(time_integrated_activity_mbq_h: float, mass_g: float, nuclide: str = "Lu-177") -> float:
    """MIRD self-dose D = TIA x S(self) with S = mean electron energy / mass (full local absorption)."""
    return time_integrated_activity_mbq_h * decay_data(nuclide).self_dose_gy_g_per_mbq_h / mass_g


def time_integrated_activity_mono_exp(initial_activity_mbq: float, effective_half_life_h: float) -> float:
    """TIA in MBq*h of A(t) = A0 exp(-ln2 t / Teff) integrated from 0 to infinity."""
    return initial_activity_mbq * effective_half_life_h / math.log(2)
