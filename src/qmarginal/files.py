"""Files the project writes: atomic replacement, output-path checks, stale temporary files.

Every file qmarginal writes (states, problems, reports, CSV, figures, checkpoints, model cards)
goes through :func:`atomic_write`: the content is written to a temporary file in the *same*
folder (``.NAME.tmp<pid>``), flushed and ``fsync``-ed, then moved over the target with
``os.replace``, which is atomic on POSIX and Windows. A crash, a full disk or a file-size limit
therefore leaves either the old file or the new one under the real name, never a truncated mix;
the temporary file is removed on failure, and :func:`clean_stale_tmp` removes those a killed
process left behind.

:func:`check_output` is called before any work starts: it refuses an output that is one of the
inputs, an existing file the caller may not replace, a missing folder or one that cannot be
written, with one :class:`~qmarginal.errors.OutputPathError` line naming the path.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(d / "a.txt", "w") as f:
    ...     _ = f.write("hello")
    >>> (d / "a.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('hello', ['a.txt'])
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import OutputPathError

__all__ = ["atomic_write", "write_text", "write_bytes", "check_output", "clean_stale_tmp",
           "tmp_name"]

_TMP = re.compile(r"^\..+\.tmp\d*$")


def tmp_name(path: Path) -> Path:
    """The temporary name used while ``path`` is written: ``.NAME.tmp<pid>`` beside it."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", **open_kwargs) -> Iterator:
    """Open a temporary file beside ``path``; on a clean exit flush, fsync and rename it over.

    Args:
        path: the final file.
        mode: ``"wb"`` or ``"w"`` (text; ``encoding`` defaults to UTF-8).

    Raises:
        OutputPathError: the folder is missing or not writable, the disk is full, or the file
            cannot be replaced (the message names the path and the OS reason); the previous file
            under ``path``, if any, is left untouched.
    """
    path = Path(path)
    if "w" not in mode:
        raise ValueError(f"atomic_write writes; mode {mode!r}")
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    tmp = tmp_name(path)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}", path=path) from exc
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path, *, inputs: Iterable = (), overwrite: bool = True,
                 what: str = "output") -> Path:
    """Check, before any work, that ``path`` can be written.

    Args:
        path: the output file.
        inputs: files the command reads; the output may not be one of them.
        overwrite: whether an existing file may be replaced (it is replaced atomically).
        what: the option's name, for the message ("-o", "--output").

    Returns:
        ``path`` as a Path.

    Raises:
        OutputPathError: ``path`` is an input, a folder, exists while ``overwrite`` is False, or
            its folder is missing or not writable.
    """
    path = Path(path)
    for src in inputs:
        src = Path(src)
        if path.resolve() == src.resolve() or _same_file(path, src):
            raise OutputPathError(f"{what} {path} is the input file; choose another name "
                                  "(inputs are never overwritten)", path=path)
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder, not a file", path=path)
    if path.exists() and not overwrite:
        raise OutputPathError(f"{what} {path} exists; remove it or choose another name", path=path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputPathError(f"{what} {path}: folder {folder} does not exist", path=path)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path} is not writable", path=path)
    try:  # the same probe atomic_write needs: a file created in that folder
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"{what} {path}: cannot write in {folder} "
                              f"({exc.strerror or exc})", path=path) from exc
    return path


def clean_stale_tmp(folder) -> list[Path]:
    """Remove the ``.NAME.tmp<pid>`` files a killed writer left in ``folder``; returns them.

    Only names of the form :func:`tmp_name` makes are touched, and only those whose process is
    no longer running (a concurrent writer's file is left alone).
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if not (p.is_file() and _TMP.match(p.name)):
            continue
        pid = p.name.rsplit(".tmp", 1)[1]
        if pid and pid != str(os.getpid()) and _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
