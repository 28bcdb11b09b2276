"""Figures of moescope's HDF5 reports: one module per report kind, dispatched on the groups a file holds.

Each kind module has KIND (its name), DESCRIPTION (one line), applies(h5py.File) -> bool and
plot(h5py.File, Output), which raises ReportError for a report it cannot read.
"""
import h5py
import matplotlib.pyplot as plt

from . import activations, compare_spaces, correlation, geometry, hessian, landscape, sweep, train
from .common import STYLE, Output, ReportError

KINDS = [geometry, activations, compare_spaces, train, hessian, landscape, correlation, sweep]
BY_NAME = {m.KIND: m for m in KINDS}

__all__ = ["KINDS", "BY_NAME", "Output", "ReportError", "render", "list_kinds"]


def list_kinds():
    """'kind  description' lines, one per kind."""
    width = max(len(m.KIND) for m in KINDS)
    return [f"{m.KIND:<{width}}  {m.DESCRIPTION}" for m in KINDS]


def render(path, out, only=None):
    """Draws every kind found in the report at `path` (or only those named) into `out`; returns the kinds drawn.

    Raises ReportError when the file is no HDF5 file, holds nothing plottable, or a group is malformed."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ReportError(f"cannot open as HDF5 ({e})") from None
    drawn = []
    with f, plt.rc_context(STYLE):
        try:
            kinds = [m for m in KINDS if only is None or m.KIND in only]
            found = [m for m in kinds if m.applies(f)]
            if not found:
                if only:
                    wanted = ", ".join("/" + k for k in only)
                    raise ReportError(f"nothing to plot: no {wanted} results in this report")
                groups = ", ".join("/" + m.KIND for m in KINDS)
                raise ReportError(f"nothing to plot: none of {groups} with data in this report")
            for m in found:
                m.plot(f, out)
                drawn.append(m.KIND)
        except OSError as e:  # h5py read errors inside a damaged file
            raise ReportError(f"cannot read ({e})") from None
        finally:
            if not out.keep:
                plt.close("all")
    return drawn
