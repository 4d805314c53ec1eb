"""The line scan of ``lwbench prepare``: one pass over a delimited file's lines before pandas parses it.

It checks the encoding and every row's field count, so a bad line is named by its line number and what is
wrong with it (:class:`BadLines`: up to ten in one message; ``on_bad_lines`` decides whether they are an
error, a warning or skipped), and a byte that does not decode by its line, with an ``--encoding`` to try.
Records are split as pandas' parser splits them (blank lines skipped, a quoted field may span lines), so
record ``k`` of the scan is pandas' row ``k`` and :meth:`LineScan.line_of` gives its line number.
"""
from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import functools
import gzip
import io
import itertools
import lzma
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lwbench.data.interactions import DataError

QUOTE = '"'


@dataclass
class BadLines:
    """The bad lines of one file: how many, and the first ten in words."""

    path: Path
    expected: str                      # "3 (user, item, rating)"
    count: int = 0
    shown: list = field(default_factory=list)

    def message(self, mode: str) -> str:
        many = f"{self.count:,} bad line{'s' if self.count != 1 else ''}"
        first = f" (the first {len(self.shown)} below)" if self.count > len(self.shown) else ""
        if mode == "error":
            head = (f"{self.path}: {many}{first}; fix them, or leave them out with --on-bad-lines skip "
                    "(or warn, which lists them)")
        else:
            head = f"{self.path}: {many} left out (--on-bad-lines {mode}){first}"
        return head + ":\n" + "\n".join(f"  {line}" for line in self.shown)


@dataclass
class LineScan:
    """One pass over a delimited file's lines, as pandas' parser splits them into records: blank lines are
    skipped, a quoted field may span lines. Records are the data rows (the header excluded)."""

    n_records: int
    bad_records: np.ndarray            # records whose field count differs from the header's
    bad_fields: np.ndarray             # their field counts
    starts: np.ndarray                 # record -> line: line = lines[k] + record - starts[k] (k: last start <= record)
    lines: np.ndarray

    def line_of(self, record: int) -> int:
        k = int(np.searchsorted(self.starts, record, side="right")) - 1
        return int(self.lines[k] + record - self.starts[k])

    def field_errors(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions (from ``start``) and field counts of the records in ``[start, stop)`` with a wrong count."""
        lo, hi = np.searchsorted(self.bad_records, [start, stop])
        return self.bad_records[lo:hi] - start, self.bad_fields[lo:hi]


def _open_binary(path: Path):
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")


SCAN_BLOCK = 1 << 23               # bytes per block of the vectorised line scan
SCAN_BATCH = 100_000               # records of the line-by-line scan counted at once


class _Scanner:
    """The state of :func:`scan_lines`: records seen, their field counts and where they start. Records of the
    line-by-line scan wait in plain lists and are added ``SCAN_BATCH`` at a time (:meth:`flush`)."""

    def __init__(self, sep: str) -> None:
        self.sep = sep
        self.blank = "".join(ch for ch in " \t\r\n" if ch not in sep)
        self.header_fields: int | None = None
        self.record = 0                # data records so far
        self.last_start = 0            # the line the last record (or the header) started on
        self.line_no = 0               # lines consumed
        self.bad_records, self.bad_fields, self.starts, self.lines = [], [], [], []
        self.pending_lines: list[int] = []    # records of text_line not added yet: first line, fields
        self.pending_fields: list[int] = []

    def add(self, start_lines: np.ndarray, n_fields: np.ndarray) -> None:
        """Records (non-blank) starting on ``start_lines`` with ``n_fields`` fields; a record that does not start
        on the line after the previous one's first line (after blank lines, or a quoted field spanning lines)
        starts a new entry of ``starts``/``lines``."""
        if not len(start_lines):
            return
        if self.header_fields is None:
            self.header_fields = int(n_fields[0])
            self.last_start = int(start_lines[0])
            start_lines, n_fields = start_lines[1:], n_fields[1:]
            if not len(start_lines):
                return
        index = self.record + np.arange(len(start_lines))
        previous = np.concatenate([[self.last_start], start_lines[:-1]])
        jump = (start_lines != previous + 1)
        if not self.record:
            jump[0] = True
        self.starts.append(index[jump])
        self.lines.append(start_lines[jump])
        wrong = n_fields != self.header_fields
        self.bad_records.append(index[wrong])
        self.bad_fields.append(n_fields[wrong])
        self.record += len(start_lines)
        self.last_start = int(start_lines[-1])

    def flush(self) -> None:
        """Add the records that :meth:`text_line` collected."""
        if self.pending_lines:
            self.add(np.array(self.pending_lines, dtype=np.int64), np.array(self.pending_fields, dtype=np.int64))
            self.pending_lines, self.pending_fields = [], []

    def block(self, data: bytes, final: bool) -> None:
        """Lines of ``data`` (whole lines, no quote character), counted with numpy: a line's fields are its
        separators + 1; a line without a separator is blank when it holds only blanks."""
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10)
        if final and len(buf) and buf[-1] != 10:
            ends = np.append(ends, len(buf))
        seps = np.bincount(np.searchsorted(ends, np.flatnonzero(buf == ord(self.sep))), minlength=len(ends))
        filled = np.ones(len(ends), dtype=bool)
        blank = self.blank.encode()
        for k in np.flatnonzero(seps[: len(ends)] == 0).tolist():
            begin = int(ends[k - 1]) + 1 if k else 0
            filled[k] = bool(data[begin:int(ends[k])].strip(blank))
        numbers = self.line_no + 1 + np.arange(len(ends))
        self.line_no += len(ends)
        if filled.any():
            self.flush()
            self.add(numbers[filled], seps[: len(ends)][filled] + 1)

    def text_line(self, text: str, source) -> None:
        """One line as text (``source`` gives the next lines of a quoted field that goes on)."""
        self.line_no += 1
        start = self.line_no
        if QUOTE in text:
            while text.count(QUOTE) % 2:           # an open quoted field: the record goes on
                more = next(source, None)
                if more is None:
                    break
                self.line_no += 1
                text += more
            n_fields = text.count(self.sep) + 1
            if len(self.sep) == 1:
                with contextlib.suppress(csv.Error):
                    n_fields = len(next(csv.reader([text], delimiter=self.sep, quotechar=QUOTE), []))
        elif not text.strip(self.blank):
            return                                  # pandas skips blank lines
        else:
            n_fields = text.count(self.sep) + 1
        self.pending_lines.append(start)
        self.pending_fields.append(n_fields)
        if len(self.pending_lines) >= SCAN_BATCH:
            self.flush()

    def result(self) -> LineScan:
        self.flush()
        def joined(parts):
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
        return LineScan(self.record, joined(self.bad_records), joined(self.bad_fields), joined(self.starts),
                        joined(self.lines))


def scan_lines(path: Path, sep: str, encoding: str) -> LineScan:
    """One pass over the lines of a delimited file: it decodes (an error names the line and the byte, and
    suggests ``--encoding``), has a header, and every record's field count. Whole blocks without a quote
    character are counted with numpy; from the first quote on, line by line (a quoted field may hold the
    separator or span lines), the records gathered in lists and added to the scan ``SCAN_BATCH`` at a time."""
    ascii_compatible = all(ch.encode(encoding, errors="ignore") == ch.encode() for ch in f"\n\r{sep}{QUOTE} \t")
    utf8 = codecs.lookup(encoding).name == "utf-8"
    decoding = "utf-8-sig" if utf8 else encoding
    scanner = _Scanner(sep)
    exact = ascii_compatible
    with _open_binary(path) as handle:
        try:
            rest = None
            if ascii_compatible and len(sep) == 1 and sep.isascii():
                carry, first = b"", True
                while rest is None:
                    block = handle.read(SCAN_BLOCK)
                    data = carry + block
                    if first and utf8 and data.startswith(codecs.BOM_UTF8):
                        data = data[len(codecs.BOM_UTF8):]
                    first = False
                    cut = len(data) if not block else data.rfind(b"\n") + 1
                    if block and not cut:
                        carry = data                            # no line end yet: read on
                        continue
                    data, carry = data[:cut], data[cut:]
                    if b'"' in data:
                        rest = itertools.chain(io.BytesIO(data), _joined(carry, handle))
                        break
                    if not data.isascii():
                        _decode_block(path, data, decoding, encoding, scanner.line_no)
                    scanner.block(data, final=not block)
                    if not block:
                        break
            else:
                rest = handle
            if rest is not None:
                if ascii_compatible:
                    source = map(functools.partial(bytes.decode, encoding=decoding), rest)
                else:
                    source, exact = io.TextIOWrapper(handle, encoding=encoding, newline=""), False
                for text in source:
                    scanner.text_line(text, source)
                scanner.flush()
        except UnicodeDecodeError as exc:
            raise _encoding_error(path, scanner.line_no + 1, exc, encoding, exact=exact) from None
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise DataError(f"{path}: cannot read ({exc})") from None
    if scanner.header_fields is None:
        what = "is empty (0 bytes)" if not scanner.line_no else "holds only blank lines"
        raise DataError(f"{path}: the file {what}; expected a header line naming the columns (e.g. "
                        "user_id,item_id,rating,timestamp), then one row per interaction")
    return scanner.result()


def _joined(carry: bytes, handle):
    """The lines of ``handle``, the first one prefixed by ``carry`` (the start of a line read with a block)."""
    first = next(handle, b"")
    if carry or first:
        yield carry + first
    yield from handle


def _decode_block(path: Path, data: bytes, decoding: str, encoding: str, lines_before: int) -> None:
    try:
        data.decode(decoding)
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data[line_start:data.find(b"\n", exc.start) if b"\n" in data[exc.start:] else len(data)]
        local = UnicodeDecodeError(exc.encoding, line, exc.start - line_start, exc.end - line_start, exc.reason)
        raise _encoding_error(path, lines_before + data.count(b"\n", 0, exc.start) + 1, local, encoding,
                              exact=True) from None


def _encoding_error(path: Path, line_no: int, exc: UnicodeDecodeError, encoding: str, exact: bool) -> DataError:
    byte = exc.object[exc.start]
    where = f"{path}:{line_no}: byte 0x{byte:02x} at byte {exc.start + 1} of the line" if exact else \
        f"{path}: byte 0x{byte:02x} (near line {line_no})"
    suggestion = ("pass --encoding latin-1 if it is Latin-1 (ISO-8859-1), or --encoding cp1252 for Windows-1252"
                  if codecs.lookup(encoding).name != "iso8859-1" else "pass the file's encoding with --encoding")
    return DataError(f"{where} is not valid {encoding} ({exc.reason}): the file is in another encoding; "
                     f"{suggestion}")
