"""hardbatch.fileio: atomic writes replace a file whole or leave it as it was, with the usual permissions."""

from __future__ import annotations

import os

import pytest

from hardbatch.fileio import atomic_write_text


def test_atomic_write_text_replaces_whole_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old\n")
    assert path.read_text() == "old\n"
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_write_text_failure_keeps_old_content(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old content\n")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_text(path, "x" * 100_000)
    monkeypatch.undo()
    assert path.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # no temporary file left behind
    # A failure while writing the text itself (unencodable) behaves the same.
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "partial \udc80 text")
    assert path.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    # No new file appears when the first write fails.
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(tmp_path / "g.txt", "\udc80")
    assert not (tmp_path / "g.txt").exists()


def test_atomic_write_text_gives_files_the_usual_permissions(tmp_path):
    """Records written atomically get the same mode as any file written with open() (umask applied), not 0600."""
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic = tmp_path / "atomic.txt"
        atomic_write_text(atomic, "x")
    finally:
        os.umask(old)
    assert oct(atomic.stat().st_mode & 0o777) == oct(plain.stat().st_mode & 0o777) == oct(0o644)
