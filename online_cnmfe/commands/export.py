"""``online-cnmfe export``: a results file to NWB, CSV tables, CaImAn HDF5 or a CellReg .mat."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="convert a results file to NWB, CSV, CaImAn HDF5 or CellReg .mat",
        description=(
            "Convert RESULT.h5 (written by `online-cnmfe run` or `process`) for downstream "
            "tools. --nwb: pynwb file with pixel-mask ROIs, C / raw / deconvolved / dF/F "
            "series, summary images, closed-loop triggers and the session metadata given with "
            "--metadata FILE or the options below. --csv DIR: traces, spikes, dF/F, neuron "
            "table, events and triggers as CSV. --caiman: estimates/A in Fortran pixel order, "
            "C, S, YrA, b0 (CaImAn's load_CNMF, roiextractors). --cellreg: an N x H x W "
            "footprint array for CellReg. Neurons rejected with `online-cnmfe curate` (or the "
            "review's R key) are left out of every export unless --include-rejected. Several "
            "outputs can be written at once."
        ),
        epilog=(
            "example: online-cnmfe export s.h5 --nwb s.nwb --subject-id M12 --indicator GCaMP6f "
            "--location CA1 --csv s_tables/"
        ),
    )
    p.add_argument("result", type=Path, metavar="RESULT.h5", help="results file")
    out = p.add_argument_group("outputs")
    out.add_argument("--nwb", type=Path, metavar="OUT.nwb", help="write an NWB file")
    out.add_argument("--csv", type=Path, metavar="DIR", help="write CSV tables into DIR")
    out.add_argument("--caiman", type=Path, metavar="OUT.hdf5", help="write CaImAn HDF5 keys")
    out.add_argument("--cellreg", type=Path, metavar="OUT.mat", help="write a CellReg .mat")
    p.add_argument(
        "--include-rejected",
        action="store_true",
        help="keep the neurons rejected by curation (left out by default)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    meta = p.add_argument_group("NWB session metadata (or in --metadata FILE)")
    meta.add_argument(
        "--metadata",
        type=Path,
        metavar="FILE",
        help="TOML/JSON file of metadata keys (top level or an [nwb] table); the options "
        "below win over it",
    )
    for key, help_text in (
        ("identifier", "unique id of this NWB file (default: a new UUID)"),
        ("session-description", "what the session was"),
        ("session-start-time", "ISO 8601 start time (default: when the results file was made)"),
        ("subject-id", "animal id"),
        ("species", "e.g. 'Mus musculus'"),
        ("indicator", "e.g. GCaMP6f"),
        ("location", "brain area, e.g. CA1"),
        ("device", "imaging device (default Miniscope)"),
        ("experimenter", "who ran the session"),
    ):
        meta.add_argument(f"--{key}", dest=key.replace("-", "_"), metavar="TEXT", help=help_text)
    meta.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other metadata key (sex, age, genotype, lab, institution, keywords, "
        "excitation_lambda_nm, emission_lambda_nm, ...); repeatable",
    )
    p.add_argument(
        "--nwb-masks",
        choices=("pixel", "image"),
        default="pixel",
        help="ROI masks as sparse pixel masks (default, compact) or dense image masks "
        "(gzip-compressed; for tools that read only image_mask)",
    )
    p.set_defaults(func=run)


META_OPTIONS = (
    "identifier", "session_description", "session_start_time", "subject_id", "species",
    "indicator", "location", "device", "experimenter",
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from online_cnmfe.errors import ConfigError
    from online_cnmfe.results import export, export_csv, export_nwb
    from online_cnmfe.results.export_meta import load_metadata
    from online_cnmfe.results.output_check import MiB, check_output

    targets = [
        (args.nwb, "nwb"), (args.csv, "csv"), (args.caiman, "caiman"), (args.cellreg, "cellreg"),
    ]  # fmt: skip
    targets = [(path, kind) for path, kind in targets if path is not None]
    if not targets:
        raise ConfigError("nothing to do: give at least one of --nwb, --csv, --caiman, --cellreg")
    if not args.result.is_file():
        raise ConfigError(f"results file {args.result} does not exist")
    need = args.result.stat().st_size + 16 * MiB  # an export is at most about the file's size
    for path, kind in targets:  # every output checked before the first is written
        if kind == "csv":  # a folder of tables
            if path.exists() and any(path.iterdir()) and not args.overwrite:
                raise ConfigError(f"{path} exists and is not empty; pass --overwrite")
            if not path.parent.is_dir():
                raise ConfigError(f"the folder of {path} does not exist")
        else:
            check_output(
                path, overwrite=args.overwrite, need_bytes=need, flag=f"--{kind}",
                inputs=(args.result,),
            )  # fmt: skip
    pairs = list(args.meta) + [
        f"{key}={getattr(args, key)}" for key in META_OPTIONS if getattr(args, key) is not None
    ]
    metadata = load_metadata(args.metadata, pairs) if args.nwb is not None else None
    keep = args.include_rejected
    writers = {
        "nwb": lambda src, dst: export_nwb.export_nwb(
            src, dst, metadata=metadata, include_rejected=keep, masks=args.nwb_masks
        ),
        "caiman": lambda src, dst: export.export_caiman(src, dst, include_rejected=keep),
        "cellreg": lambda src, dst: export.export_cellreg(src, dst, include_rejected=keep),
    }
    for path, kind in targets:
        if kind == "csv":
            export_csv.export_csv(args.result, path, include_rejected=keep)
            sys.stdout.write(f"wrote {path}\n")
            continue
        partial = path.with_name(f"{path.stem}.partial{path.suffix}")  # renamed when complete
        try:
            writers[kind](args.result, partial)
            os.replace(partial, path)
        finally:
            if partial.exists():
                partial.unlink()
        sys.stdout.write(f"wrote {path}\n")
    return 0
