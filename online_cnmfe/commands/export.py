"""``online-cnmfe export``: convert a results file to NWB, CaImAn HDF5 or a CellReg .mat."""

from __future__ import annotations

import argparse
import os
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
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from online_cnmfe.errors import ConfigError
    from online_cnmfe.results import export
    from online_cnmfe.results.output_check import MiB, check_output

    targets = [
        ("--nwb", args.nwb, export.export_nwb),
        ("--caiman", args.caiman, export.export_caiman),
        ("--cellreg", args.cellreg, export.export_cellreg),
    ]
    targets = [(flag, path, fn) for flag, path, fn in targets if path is not None]
    if not targets:
        raise ConfigError("nothing to do: give at least one of --nwb, --caiman, --cellreg")
    if not args.result.is_file():
        raise ConfigError(f"results file {args.result} does not exist")
    need = args.result.stat().st_size + 16 * MiB  # an export is at most about the file's size
    for flag, path, _ in targets:  # every output checked before the first is written
        check_output(
            path, overwrite=args.overwrite, need_bytes=need, flag=flag, inputs=(args.result,)
        )
    for _, path, fn in targets:
        partial = path.with_name(f"{path.stem}.partial{path.suffix}")  # renamed when complete
        try:
            fn(args.result, partial)
            os.replace(partial, path)
        finally:
            if partial.exists():
                partial.unlink()
        sys.stdout.write(f"wrote {path}\n")
    return 0
