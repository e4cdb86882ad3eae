"""``online-cnmfe export``: convert a results file to NWB, CaImAn HDF5 or a CellReg .mat."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="convert a results file to NWB, CaImAn HDF5 or CellReg .mat",
        description=(
            "Convert RESULT.h5 (written by `online-cnmfe run` or `process`) for downstream "
            "tools: --nwb (pynwb: PlaneSegmentation image masks and Fluorescence series, time "
            "x ROIs), --caiman (estimates/A in Fortran pixel order, C, S, YrA, b0; readable "
            "by CaImAn's load_CNMF and roiextractors) and --cellreg (an N x H x W footprint "
            "array for CellReg). Several outputs can be written at once."
        ),
    )
    p.add_argument("result", type=Path, metavar="RESULT.h5", help="results file")
    p.add_argument("--nwb", type=Path, metavar="OUT.nwb", help="write an NWB file")
    p.add_argument("--caiman", type=Path, metavar="OUT.hdf5", help="write CaImAn HDF5 keys")
    p.add_argument("--cellreg", type=Path, metavar="OUT.mat", help="write a CellReg .mat")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from online_cnmfe.errors import ConfigError
    from online_cnmfe.results import export

    targets = [(args.nwb, export.export_nwb), (args.caiman, export.export_caiman)]
    targets.append((args.cellreg, export.export_cellreg))
    targets = [(path, fn) for path, fn in targets if path is not None]
    if not targets:
        raise ConfigError("nothing to do: give at least one of --nwb, --caiman, --cellreg")
    for path, fn in targets:
        fn(args.result, path)
        sys.stdout.write(f"wrote {path}\n")
    return 0
