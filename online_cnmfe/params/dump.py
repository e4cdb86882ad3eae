"""A commented default config file (``online-cnmfe params --dump``).

The comments come from the parameter classes themselves: the class docstring's first paragraph
heads each ``[stage]`` table and the ``#`` comments written beside (or just above) a field in
the source describe its key, so a key is still documented in exactly one place.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import tokenize
from typing import Any

from online_cnmfe.params.tree import _STAGES, CNMFEParams
from online_cnmfe.version import __version__

# Stages written active (uncommented): what a user sets for each recording. The others are
# commented out, so a dumped file keeps following the defaults of later versions.
ACTIVE_STAGES = ("data",)

_FIELD = re.compile(r"^\s+([a-z_][a-z0-9_]*)\s*:")


def field_comments(cls: type) -> dict[str, str]:
    """The ``#`` comments of each field of a parameter dataclass, read from its source.

    A comment on the field's line, the comment lines just above it, and comment lines that
    continue the field's trailing comment on the following lines are joined.

    Examples
    --------
    >>> from online_cnmfe.params import EngineParams
    >>> field_comments(EngineParams)["on_restart"]
    '"continue" | "reinitialise" | "stop"'
    """
    names = {f.name for f in dataclasses.fields(cls)}
    lines = inspect.getsource(cls).splitlines()
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0] - 1] = tok.string.lstrip("#").strip()
    out: dict[str, str] = {}
    used: set[int] = set()  # comment lines already attached to a field
    for i, line in enumerate(lines):
        m = _FIELD.match(line)
        if not m or m.group(1) not in names:
            continue
        above, j = [], i - 1
        while j >= 0 and lines[j].lstrip().startswith("#") and j not in used:
            above.insert(0, comments.get(j, ""))
            j -= 1
        parts = above + ([comments[i]] if i in comments else [])
        # a trailing comment with an open parenthesis continues on the next comment lines
        k, text = i + 1, " ".join(parts)
        while text.count("(") > text.count(")") and k < len(lines):
            if not lines[k].lstrip().startswith("#"):
                break
            parts.append(comments.get(k, ""))
            used.add(k)
            text = " ".join(parts)
            k += 1
        out[m.group(1)] = " ".join(p for p in parts if p)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _wrap(text: str, prefix: str, width: int = 96) -> list[str]:
    words, lines, line = text.split(), [], prefix
    for word in words:
        if len(line) + len(word) + 1 > width and line.strip("# "):
            lines.append(line.rstrip())
            line = prefix
        line += word + " "
    if line.strip("# "):
        lines.append(line.rstrip())
    return lines


def default_config_text(params: CNMFEParams | None = None) -> str:
    """A TOML config of ``params`` (default: the defaults) with a comment on every key.

    Keys of :data:`ACTIVE_STAGES` and values that differ from the defaults are written as
    values; every other key is commented out (``#key = default``, the sshd_config
    convention), so the file loads to exactly ``params`` while the defaults of the other
    stages keep following the software. A key whose value is None (unset) is always
    commented out: TOML has no null.

    Examples
    --------
    >>> import tomllib
    >>> text = default_config_text()
    >>> CNMFEParams.from_dict(tomllib.loads(text)) == CNMFEParams()
    True
    """
    params = params or CNMFEParams()
    values, defaults = params.to_dict(), CNMFEParams().to_dict()
    out = [
        f"# online-cnmfe parameters (written by online-cnmfe {__version__}).",
        "# Use it with `online-cnmfe process MOVIE --config FILE` or `online-cnmfe run --config",
        "# FILE`; override one key with --set stage.key=value. Uncomment a key (#key = value)",
        "# to change it; keys left commented follow the software's defaults. Units are in the",
        "# key names.",
    ]
    for stage, cls in _STAGES.items():
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        out += ["", *_wrap(doc, "# "), f"[{stage}]"]
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            value = values[stage][f.name]
            if comments.get(f.name):
                out += _wrap(comments[f.name], "# ")
            changed = value != defaults[stage][f.name]
            active = (stage in ACTIVE_STAGES or changed) and value is not None
            text = "<unset>" if value is None else _toml_value(value)
            out.append(f"{'' if active else '#'}{f.name} = {text}")
    return "\n".join(out) + "\n"
