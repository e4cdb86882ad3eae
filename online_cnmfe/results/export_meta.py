"""Session metadata for exports (NWB): the experiment facts a results file does not know.

Given as options of ``online-cnmfe export`` or in a metadata file (TOML or JSON, top-level keys
or an ``[nwb]`` table), validated when loaded: an unknown key names the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from online_cnmfe.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportMetadata:
    """What an NWB file says about the session (every key optional).

    Attributes
    ----------
    identifier : str
        Unique id of the NWB file (default: a new UUID per export, as NWB asks).
    session_description, session_start_time
        Start time as ISO 8601 (default: the results file's creation time).
    experimenter, lab, institution, keywords : str
        ``keywords`` comma-separated.
    subject_id, species, sex, age, genotype, subject_description : str
        ``age`` in ISO 8601 duration (``P90D``), ``sex`` one of M, F, U, O.
    indicator, location : str
        e.g. ``GCaMP6f`` and ``CA1``.
    device, device_description, manufacturer : str
    excitation_lambda_nm, emission_lambda_nm : float
    """

    identifier: str = ""
    session_description: str = ""
    session_start_time: str = ""
    experimenter: str = ""
    lab: str = ""
    institution: str = ""
    keywords: str = ""
    subject_id: str = ""
    species: str = ""
    sex: str = ""
    age: str = ""
    genotype: str = ""
    subject_description: str = ""
    indicator: str = ""
    location: str = ""
    device: str = "Miniscope"
    device_description: str = "1-photon head-mounted miniscope"
    manufacturer: str = ""
    excitation_lambda_nm: float = 470.0
    emission_lambda_nm: float = 520.0

    def __post_init__(self) -> None:
        if self.sex and self.sex not in ("M", "F", "U", "O"):
            raise ValueError(f"sex={self.sex!r}; allowed: M, F, U, O (NWB)")
        for name in ("excitation_lambda_nm", "emission_lambda_nm"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 100 <= value <= 2000):
                raise ValueError(f"{name}={value!r} is out of range; allowed: [100, 2000] nm")
        if self.session_start_time:
            try:
                datetime.fromisoformat(self.session_start_time)
            except ValueError:
                raise ValueError(
                    f"session_start_time={self.session_start_time!r} is not ISO 8601 "
                    "(e.g. 2024-05-01T14:30:00+02:00)"
                ) from None

    def with_identifier(self) -> ExportMetadata:
        """This metadata with a fresh UUID as identifier when none was given."""
        return self if self.identifier else dataclasses.replace(self, identifier=str(uuid.uuid4()))


KEYS = tuple(f.name for f in dataclasses.fields(ExportMetadata))


def metadata_from_dict(values: dict[str, Any], source: str = "metadata") -> ExportMetadata:
    """Build and validate :class:`ExportMetadata`; ConfigError names a bad key or value."""
    for key in values:
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=2, cutoff=0.5)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}; {hint}keys: {', '.join(KEYS)}")
    typed = {}
    for key, value in values.items():
        want = type(ExportMetadata.__dataclass_fields__[key].default)
        if want is float:
            try:
                typed[key] = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: {key}={value!r} is not a number") from None
        else:
            typed[key] = str(value)
    try:
        return ExportMetadata(**typed)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_metadata(path: str | Path | None, pairs: list[str] = ()) -> ExportMetadata:
    """Metadata from an optional file plus ``KEY=VALUE`` pairs (the pairs win).

    Raises
    ------
    ConfigError
        Unreadable file, unknown key, bad value.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
            values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except OSError as exc:
            raise ConfigError(f"cannot read the metadata file {path}: {exc.strerror}") from None
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"metadata file {path} is not valid TOML/JSON: {exc}") from None
        if isinstance(values.get("nwb"), dict):
            values = dict(values["nwb"])
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"expected KEY=VALUE (e.g. indicator=GCaMP6f), got {pair!r}")
        values[key.strip()] = value.strip()
    return metadata_from_dict(values, str(path) if path else "metadata")
