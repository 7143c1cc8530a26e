"""Files written so a crash or a full disk never leaves half of one: atomic writes, CSV and JSON, run locks."""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hardbatch.errors import UsageError

LOCK = ".hardbatch.lock"  # held (flock) by the process writing a run; not a record, never removed


class NoSpaceLeft(OSError):
    """A write failed for lack of disk space (or quota); the message names the file and the space it needs."""

    def __init__(self, path: Path | str, needed: int | None = None):
        path = Path(path)
        try:
            free = shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free
        except (OSError, StopIteration):
            free = None
        need = f"needs about {_size(needed)}" if needed is not None else "needs more space"
        have = f", {_size(free)} free there" if free is not None else ""
        super().__init__(errno.ENOSPC, f"no space left on the device to write {path} ({need}{have})", str(path))

    def __str__(self) -> str:
        return str(self.strerror)


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""


@contextlib.contextmanager
def space_for(path: Path | str, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT) while writing ``path`` into NoSpaceLeft, which says what and how much."""
    try:
        yield
    except NoSpaceLeft:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceLeft(path, needed) from None
        raise


def atomic_write_bytes(path: Path, data: bytes | memoryview, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    A failure (a full disk: NoSpaceLeft) leaves the old file as it was and no temporary file behind. ``durable``:
    the data reach the disk (fsync) before the file replaces the old one, so a power loss leaves one of the two as
    well; without it the write is atomic for every process (a killed writer included: the page cache keeps what was
    written), not across a power loss, and costs no disk flush (``sync_files`` makes it durable later).
    """
    path = Path(path)
    with space_for(path, len(data)):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, _file_mode(path))  # mkstemp makes 0600; results should read like any written file
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode(), durable=durable)


def sync_files(*paths: Path) -> None:
    """Flush ``paths`` (those that exist) and then their folders to the disk (fsync), so that what was written to them
    without ``durable``, renames included, survives a power loss from here on."""
    folders = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        folders.append(Path(path).parent)
    for folder in dict.fromkeys(folders):
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:  # a platform whose folders cannot be opened (Windows): the files are flushed
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _file_mode(path: Path) -> int:
    """The existing file's permissions, else what open() would give a new file (0666 minus the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def csv_text(rows: Iterable[dict], fields: Sequence[str]) -> str:
    """CSV with a header; missing values and NaN become empty cells (read_csv turns them back into NaN)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _number(text: str) -> int | float:
    """An int if ``text`` is one (so it writes back unchanged), else a float; empty cells become NaN."""
    if text == "":
        return math.nan
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_csv(path: Path) -> list[dict[str, int | float]]:
    """Rows of a numeric CSV file as dicts of numbers."""
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that files can be written there; UsageError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", delete=True):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to output directory {str(path)!r}: {e.strerror or e}") from None
    return path


class RunInUse(UsageError):
    """Another process holds the run directory's lock."""


@contextlib.contextmanager
def run_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive lock on run directory ``path`` for the block, or raise RunInUse at once.

    An OS lock (``flock``) on ``path``/LOCK: the OS drops it when the process ends, however it ends, so a
    killed run can be resumed at once. The lock file stays; it is not part of the run's records.
    """
    path = Path(path)
    with space_for(path / LOCK, 0):
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUse(
                f"run directory {str(path)!r} is in use by another hardbatch process; wait for it to "
                f"finish, or use another --out"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def locked_elsewhere(path: Path | str) -> bool:
    """Whether another process holds run directory ``path``'s lock now (False if it has no lock file). Creates
    nothing; call it without holding the lock yourself (a second flock in the same process conflicts with the first).
    """
    try:
        fd = os.open(Path(path) / LOCK, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
