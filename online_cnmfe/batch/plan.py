"""The sessions of a batch: inputs, per-session overrides from a manifest, output names.

Everything here runs on the client before any cluster starts, so a typo in the manifest or an
invalid parameter stops the batch at once with a one-line error, not after hours of work.

A manifest is a CSV file with a header. Column ``input`` (required) names a recording
(relative paths are relative to the manifest's folder); ``output`` (optional) the name of its
results file in the output folder; every other column is a parameter key, with its stage
(``data.neuron_diameter_px``) or without it when the name is unique (``neuron_diameter_px``,
``frame_rate_hz``, ``init_frames``). An empty cell keeps the value from ``--config``/``--set``.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from online_cnmfe.errors import ConfigError
from online_cnmfe.offline.process import ProcessJob, frame_rate_fields
from online_cnmfe.params import OTHER_CONFIG_TABLES, CNMFEParams, read_config_file

RATE_KEY = "data.frame_rate_hz"
SLOW_THREAD_KEY = "engine.slow_path_thread"
RESERVED_COLUMNS = ("input", "output")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTask:
    """One recording to process: plain data, sent to a Dask worker.

    Attributes
    ----------
    name : str
        Session name: the results file is ``out_dir / (name + ".h5")``.
    movie : str
        Absolute path of the recording (file or Miniscope folder).
    out : str
        Absolute path of the results file.
    params_json : str
        :meth:`CNMFEParams.to_json` of the session's parameters (validated on the client).
    frame_rate_hz : float or None
        Rate given by the user (overrides the file's metadata).
    rate_from_file : bool
        Take the file's frame rate into the parameters (as ``process`` does).
    dataset : str or None
        HDF5 dataset holding the movie.
    force : bool
        Process even when an up-to-date results file exists.
    size_bytes : int
        Size of the input on disk (larger sessions are started first).
    """

    name: str
    movie: str
    out: str
    params_json: str
    frame_rate_hz: float | None = None
    rate_from_file: bool = False
    dataset: str | None = None
    force: bool = False
    size_bytes: int = 0

    def job(self) -> ProcessJob:
        """The :class:`ProcessJob` that ``online-cnmfe process`` would run for this session."""
        return ProcessJob(
            movie=Path(self.movie),
            out=Path(self.out),
            params=CNMFEParams.from_dict(json.loads(self.params_json)),
            frame_rate_hz=self.frame_rate_hz,
            rate_from_file=self.rate_from_file,
            dataset=self.dataset,
        )


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One manifest line: an input, its optional output name and its parameter overrides."""

    input: Path
    output: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    line: int = 0


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read a manifest CSV (see the module docstring).

    Raises
    ------
    ConfigError
        If the file cannot be read, has no ``input`` column, names an unknown parameter or
        lists an input twice.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read the manifest {path}: {exc}") from exc
    if not rows or "input" not in [c.strip() for c in rows[0]]:
        raise ConfigError(
            f"manifest {path} needs a header line with an 'input' column "
            "(and optionally 'output' and parameter columns such as neuron_diameter_px)"
        )
    header = [c.strip() for c in rows[0]]
    keys = {c: _param_key(c, path) for c in header if c and c not in RESERVED_COLUMNS}
    out: list[ManifestRow] = []
    for line, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            raise ConfigError(f"manifest {path} line {line}: more cells than header columns")
        row = dict(zip(header, (c.strip() for c in cells), strict=False))
        if not row.get("input"):
            raise ConfigError(f"manifest {path} line {line}: empty 'input'")
        movie = Path(row["input"]).expanduser()
        movie = movie if movie.is_absolute() else path.parent / movie
        overrides = {keys[c]: _value(v) for c, v in row.items() if c in keys and v}
        out.append(ManifestRow(movie, row.get("output") or None, overrides, line))
    return out


def plan_sessions(
    inputs: list[str | Path],
    out_dir: str | Path,
    params: CNMFEParams,
    *,
    manifest: str | Path | None = None,
    rate_given: bool = False,
    dataset: str | None = None,
    force: bool = False,
) -> list[SessionTask]:
    """The batch's sessions: command-line inputs then manifest inputs, each once.

    Parameters
    ----------
    inputs : list of path-like
        Recordings given on the command line.
    out_dir : path-like
        Folder of the results files.
    params : CNMFEParams
        Parameters from ``--config``/``--set``; manifest columns override them per session.
    manifest : path-like, optional
        Manifest CSV (see the module docstring).
    rate_given : bool
        Whether the config file or ``--set`` gives ``data.frame_rate_hz`` (then it wins over
        the files' metadata, as in ``process``; a manifest column does the same per session).
    dataset : str, optional
        HDF5 dataset holding the movies.
    force : bool
        Redo sessions whose results are already up to date.

    Returns
    -------
    list of SessionTask

    Raises
    ------
    ConfigError
        No input, an input listed twice, an invalid parameter, or two sessions writing the
        same results file.
    """
    rows = read_manifest(manifest) if manifest is not None else []
    by_input = {_key(r.input): r for r in rows}
    if len(by_input) != len(rows):
        raise ConfigError(f"manifest {manifest} lists an input twice")
    movies = [Path(p).expanduser() for p in inputs]
    seen = {_key(m) for m in movies}
    if len(seen) != len(movies):
        raise ConfigError("an input is given twice on the command line")
    movies += [r.input for r in rows if _key(r.input) not in seen]
    if not movies:
        raise ConfigError("no input: give recordings on the command line or in --manifest")
    names = _output_names(movies, [by_input.get(_key(m)) for m in movies])
    out_dir = Path(out_dir).resolve()
    tasks = []
    for movie, name in zip(movies, names, strict=True):
        row = by_input.get(_key(movie))
        session_params = params
        if row is not None and row.overrides:
            try:
                session_params = params.replace(**row.overrides)
            except ConfigError as exc:
                raise ConfigError(f"manifest {manifest} line {row.line}: {exc}") from None
        given = rate_given or (row is not None and RATE_KEY in row.overrides)
        fields = frame_rate_fields(session_params, rate_given=given)
        tasks.append(
            SessionTask(
                name=name,
                movie=str(movie.resolve()),
                out=str(out_dir / f"{name}.h5"),
                params_json=session_params.to_json(),
                dataset=dataset,
                force=force,
                size_bytes=_size(movie),
                **fields,
            )
        )
    return tasks


def batch_params(
    config: str | Path | None, overrides: dict[str, Any], init_frames: int | None = None
) -> CNMFEParams:
    """The parameters of every session before the manifest: ``--config``, ``--set`` and
    ``--init-frames`` as in ``process``, except that the slow path runs inline
    (``engine.slow_path_thread=false``: one thread per session, results identical) unless the
    config file or ``--set`` says otherwise.
    """
    params = CNMFEParams()
    config_engine: dict[str, Any] = {}
    if config is not None:
        values = read_config_file(config)
        for table in OTHER_CONFIG_TABLES:
            values.pop(table, None)
        config_engine = values.get("engine") or {}
        params = CNMFEParams.from_dict(values)
    if SLOW_THREAD_KEY not in overrides and "slow_path_thread" not in config_engine:
        params = params.replace(**{SLOW_THREAD_KEY: False})
    if overrides:
        params = params.replace(**overrides)
    if init_frames is not None:
        params = params.replace(**{"init.init_frames": init_frames})
    return params


def _param_key(column: str, manifest: Path) -> str:
    stages = CNMFEParams().to_dict()
    full = [f"{s}.{k}" for s, keys in stages.items() for k in keys]
    if column in full:
        return column
    matches = [f for f in full if f.split(".", 1)[1] == column]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(
            f"manifest {manifest}: column '{column}' is a key of several stages "
            f"({', '.join(matches)}); name the stage in the header"
        )
    close = difflib.get_close_matches(column, full + [f.split(".", 1)[1] for f in full], n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"manifest {manifest}: column '{column}' is neither input, output nor a parameter.{hint}"
    )


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _key(path: Path) -> str:
    return os.path.normcase(str(Path(path).expanduser().resolve()))


def _name_parts(path: Path) -> list[str]:
    """The folders and name of ``path``, the file's suffix dropped: ``/a/b/movie.h5`` →
    ``["a", "b", "movie"]``."""
    path = Path(path).expanduser().resolve()
    parts = list(path.parts[1:]) or ["root"]
    if not path.is_dir() and path.suffix:
        parts[-1] = path.stem
    return parts


def _output_names(movies: list[Path], rows: list[ManifestRow | None]) -> list[str]:
    """Explicit names from the manifest, else the input's name, lengthened with its parent
    folders until unique (three ``Miniscope`` folders of different days stay apart)."""
    names: list[str | None] = []
    for row in rows:
        name = None
        if row is not None and row.output:
            name = row.output[:-3] if row.output.endswith(".h5") else row.output
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise ConfigError(f"manifest line {row.line}: output {row.output!r} is not a name")
        names.append(name)
    parts = [_name_parts(m) for m in movies]
    depth = [1] * len(movies)
    while True:
        derived = [n or "_".join(p[-d:]) for n, p, d in zip(names, parts, depth, strict=True)]
        clashes = {n for n in derived if derived.count(n) > 1}
        if not clashes:
            return derived
        grown = False
        for i, n in enumerate(derived):
            if n in clashes and names[i] is None and depth[i] < len(parts[i]):
                depth[i] += 1
                grown = True
        if not grown:
            clash = sorted(clashes)[0]
            who = [str(m) for m, n in zip(movies, derived, strict=True) if n == clash]
            raise ConfigError(
                f"sessions {', '.join(who)} would all write {clash}.h5; give them distinct "
                "'output' names in the manifest"
            )


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0
