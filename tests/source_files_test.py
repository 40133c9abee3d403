"""Tests for pipeline/source_files.py: line streaming and count_lines agree, whatever the chunks."""

from __future__ import annotations

import pytest

from pipeline import source_files
from tests.sources_testing import write


@pytest.mark.parametrize(
    "data, lines",
    [(b"", 0), (b"a", 1), (b"a\n", 1), (b"\n", 1), (b"a\n\nb", 3), (b"ab\r\ncd\r\n", 2)],
)
def test_count_lines_agrees_with_the_reader(tmp_path, monkeypatch, data, lines):
    monkeypatch.setattr(source_files, "_CHUNK", 2)  # lines that straddle reads
    path = write(tmp_path / "f.txt", data)
    assert source_files.count_lines(path) == lines
    assert source_files.count_lines(write(tmp_path / "f.txt", data, gz=True)) == lines
    assert len(list(source_files.lines(path))) == lines
    assert b"".join(line + b"\n" for line in source_files.lines(path)) == (
        data if data.endswith(b"\n") or not data else data + b"\n"
    )
