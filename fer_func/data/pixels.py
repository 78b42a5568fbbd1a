"""Vectorized parse of FER2013 ``pixels`` strings ("70 80 82 ...", 2304 per row) with per-row checks.

No per-row Python: the strings of a chunk of rows are joined into one byte buffer and tokenized
with numpy (a token is a maximal run of ASCII digits; its value is built from up to three digits).
Each row is then checked for the three ways a pixel string goes wrong, so a bad file reports
exactly which rows are bad and why, instead of failing on a reshape deep inside numpy.
"""
from __future__ import annotations

import numpy as np

NUM_PIXELS = 48 * 48
CHUNK_ROWS = 2048  # bounds temporary memory (~20 bytes per character of a chunk)

# Per-row status codes, in the order a row is blamed (first problem wins).
OK, NOT_INTEGER, OUT_OF_RANGE, WRONG_COUNT = 0, 1, 2, 3


def _parse_chunk(strings: list[str]):
    text = "\n".join(strings).encode("ascii", errors="replace")  # a non-ASCII char becomes one '?'
    b = np.frombuffer(text, dtype=np.uint8)
    n = len(strings)
    # Offset just past each row's string inside the buffer (its "\n"), to map positions to rows.
    lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=n)
    row_end = np.cumsum(lengths + 1) - 1

    digit = (b >= 48) & (b <= 57)
    allowed = digit | (b == 32) | (b == 10) | (b == 9) | (b == 13) | (b == 34)  # blanks, CR, CSV quotes
    odd = np.flatnonzero(~allowed)                       # rare: any byte that is not a digit or a blank
    negative = odd[b[odd] == 45]                         # "-5" is a number, just out of range
    bad_char = odd[b[odd] != 45]

    # A token is a run of digits. Its value is read at its last digit from a 3-digit window computed
    # for the whole buffer at once (contiguous ops), then gathered once per token: far cheaper than
    # gathering each digit. Runs of 4+ digits are marked 999 so the range check catches them.
    pad = np.zeros(3, np.int16)
    dig = np.concatenate([pad, np.where(digit, b.astype(np.int16) - 48, 0)])
    isd = np.concatenate([pad.astype(bool), digit])
    w = dig[3:] + 10 * dig[2:-1] + 100 * dig[1:-2] * isd[2:-1]
    w[isd[2:-1] & isd[1:-2] & isd[:-3]] = 999
    last = np.flatnonzero(digit & ~np.append(digit[1:], False))  # last digit of each token
    value = w[last]
    count = np.diff(np.searchsorted(last, row_end), prepend=0)
    token_row = lambda positions: np.searchsorted(row_end, positions, side="left")  # noqa: E731

    status = np.zeros(n, dtype=np.int8)
    status[count != NUM_PIXELS] = WRONG_COUNT
    status[token_row(last[value > 255])] = OUT_OF_RANGE
    status[token_row(negative)] = OUT_OF_RANGE
    status[token_row(bad_char)] = NOT_INTEGER
    good = status == OK
    keep = good if good.all() else np.repeat(good, count)
    pixels = (value if good.all() else value[keep]).astype(np.uint8).reshape(-1, 48, 48)
    return pixels, status, count


def parse_pixels(strings: list[str]):
    """``(pixels uint8 (G, 48, 48) of the good rows, status int8 (N,), token count int64 (N,))``."""
    parts = [_parse_chunk(strings[i:i + CHUNK_ROWS]) for i in range(0, len(strings), CHUNK_ROWS)]
    if not parts:
        return np.zeros((0, 48, 48), np.uint8), np.zeros(0, np.int8), np.zeros(0, np.int64)
    return tuple(np.concatenate(p) for p in zip(*parts))


def describe_row(s: str) -> str:
    """Why one pixel string is bad, showing the offending value (used for the first bad row only)."""
    tokens = s.replace('"', " ").split()
    for i, t in enumerate(tokens):
        if not t.lstrip("-").isdigit() or not t.isascii():
            return f"pixel {i} is {t!r}, not an integer"
        if not 0 <= int(t) <= 255:
            return f"pixel {i} is {t}, outside 0..255"
    return f"{len(tokens)} pixel values, expected {NUM_PIXELS} (48x48)"
