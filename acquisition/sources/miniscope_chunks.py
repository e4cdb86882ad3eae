"""Which rows of a Miniscope recording's timestamps each video chunk holds.

The DAQ software writes ``framesPerFile`` frames per chunk (``0.avi``, ``1.avi``, …; the last
one shorter), and one ``timeStamps.csv`` row per frame. Chunk ``k`` therefore holds rows
``k·F`` to ``k·F + count - 1``, whatever happened to the other chunks: a missing chunk, or one
shorter than ``F`` that is not the last, leaves rows that no video frame has. Those rows are
frames lost from the recording, and the frames after them keep their own frame numbers and
times (not the missing ones' shifted onto them).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ChunkLayout:
    """Where each present chunk starts in the timestamp rows, and the rows no chunk holds.

    Attributes
    ----------
    first_rows : list of int or None
        Row of each chunk's first frame, in chunk order; None when the layout is sequential
        (chunks follow each other: a single chunk, or no usable frames-per-file).
    missing : list of [first_row, last_row, reason]
        Rows of frames no readable chunk holds, known before reading.
    frames_per_file : int or None
    """

    first_rows: list[int] | None
    missing: list[list] = field(default_factory=list)
    frames_per_file: int | None = None


def chunk_layout(
    numbers: list[int],
    counts: list[int | None],
    names: list[str],
    frames_per_file: int | None,
) -> ChunkLayout:
    """Place the chunks (see the module docstring).

    Parameters
    ----------
    numbers : list of int
        0-based number of each chunk file present, increasing (``3.avi`` → 3).
    counts : list of int or None
        Frames in each chunk from its header (None: unreadable, treated as missing).
    names : list of str
        File names, for the reasons.
    frames_per_file : int or None
        ``framesPerFile`` from ``metaData.json``; else the largest count of a chunk that is not
        the last (the last one is shorter) is used.

    Returns
    -------
    ChunkLayout

    Examples
    --------
    >>> chunk_layout([0, 1, 3], [4, 4, 2], ["0.avi", "1.avi", "3.avi"], 4).missing
    [[8, 11, '2.avi missing']]
    """
    full = [c for c in counts[:-1] if c]
    per_file = frames_per_file or (max(full) if full else None)
    if per_file is None or any(c is not None and c > per_file for c in counts):
        return ChunkLayout(None, [], None)
    missing: list[list] = []
    present = dict(zip(numbers, zip(counts, names, strict=True), strict=True))
    last = numbers[-1] if numbers else -1
    for k in range(last + 1):
        lo, hi = k * per_file, (k + 1) * per_file - 1
        if k not in present:
            missing.append([lo, hi, f"{k}.avi missing"])
            continue
        count, name = present[k]
        if count is None:
            missing.append([lo, hi, f"{name} unreadable"])
        elif count < per_file and k != last:
            missing.append([lo + count, hi, f"{name} holds {count} of {per_file} frames"])
    return ChunkLayout([k * per_file for k in numbers], missing, per_file)
