"""HTML of every psmadose report from Jinja2 templates (``psmadose/templates``): autoescaped, one stylesheet
(``report.css``) and one page frame (``base.html.j2``, with the banner) for prediction, evaluation and dosimetry."""

from __future__ import annotations

import math
from functools import cache
from importlib.resources import files

from . import BANNER


def finite_float(value) -> float | None:
    """A finite float, or None for missing, non-numeric, boolean, NaN or infinite values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


_number = finite_float


def fmt(value, sig: int = 3) -> str:
    """A number to ``sig`` significant figures, no exponent notation for ordinary values; '–' when missing."""
    number = _number(value)
    if number is None:
        return "–"
    if number == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(number)))
    if magnitude >= sig - 1:
        return f"{round(number):,d}".replace(",", "\u2009") if magnitude < 9 else f"{number:.{sig - 1}e}"
    if magnitude < -4:
        return f"{number:.{sig - 1}e}"
    decimals = sig - 1 - magnitude
    return f"{number:.{decimals}f}"


def g3(value) -> str:
    """Three significant digits, 'n/a' when missing (planning figures)."""
    number = _number(value)
    return "n/a" if number is None else f"{number:.3g}"


def percent(value) -> str:
    number = _number(value)
    return "–" if number is None else f"{100 * number:.1f} %"


@cache
def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(files("psmadose") / "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(fmt=fmt, percent=percent, g3=g3)
    return env


def stylesheet() -> str:
    return (files("psmadose") / "templates" / "report.css").read_text(encoding="utf-8")


def render(template: str, **context) -> str:
    """A whole page: ``template`` extends base.html.j2; ``title`` is required; the banner and stylesheet are
    added here. Pre-built HTML fragments must be passed as ``markupsafe.Markup`` (they are escaped otherwise)."""
    return environment().get_template(template).render(banner=BANNER, stylesheet=stylesheet(), **context)
