"""Atomic file writes and small JSON helpers: an output file is complete or absent.

Resumable steps record the settings they ran with and refuse to continue with others
(`check_settings`, `compare_settings`), so a resumed run never mixes results of two configs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from .errors import BusyError, DataError, FormatError

try:  # POSIX; elsewhere output folders are not locked (see `output_lock`)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["atomic_path", "atomic_paths", "write_bytes", "write_text", "write_json", "json_text", "read_json",
           "write_parquet", "write_csv", "check_settings", "compare_settings", "PartStore", "output_lock",
           "check_not_unfinished", "LOCK_NAME"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    On any error (including a full disk) the temporary file is removed and `path` is left
    as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are shared files
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename in (None, str(tmp_path)):  # pyarrow's "No space left" names no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """`atomic_path` for files that belong together: every temporary is written before any
    replaces its file (in the order given), so an error while writing, a full disk say,
    leaves all of them as they were."""
    with ExitStack() as stack:  # unwinds last in, first out: enter the last path first
        temporaries = [stack.enter_context(atomic_path(p)) for p in reversed(paths)]
        yield temporaries[::-1]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON: NaN and +-Infinity are written as ``null`` (no value: a correlation of a
    constant, a score of a class never seen), since strict parsers reject the bare tokens."""
    write_text(path, json_text(obj))


def json_text(obj: Any) -> str:
    """The text `write_json` writes."""
    return json.dumps(_finite(_plain(obj)), indent=2, sort_keys=False, allow_nan=False) + "\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"Expected a JSON file at {path}, but it does not exist.") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"Expected valid JSON in {path}, but got: {exc}") from None
    except UnicodeDecodeError:
        raise FormatError(f"Expected a UTF-8 JSON file at {path}, but it is not UTF-8 text.") from None
    except RecursionError:
        raise FormatError(f"Expected a saseg JSON file at {path}, but it nests too deeply to read.") from None


def write_parquet(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame to Parquet atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def check_settings(path: str | os.PathLike, settings: dict, *, what: str = "settings",
                   fresh: str = "delete it to start afresh") -> None:
    """Refuse to resume with other settings than those saved in `path`; save them if new.

    If `path` exists, its JSON must equal `settings` (see `compare_settings`); otherwise
    `settings` is written there atomically.

    Parameters
    ----------
    path : JSON file of the settings a resumable step started with
    settings : dict
        JSON-serialisable (tuples, numpy scalars and arrays, paths allowed).
    what : str
        What the settings are, for the message ("fit/score settings").
    fresh : str
        How to start afresh instead, for the message.

    Raises
    ------
    FormatError
        If the saved settings differ; the message names `path` and the keys that differ.
    """
    if Path(path).exists():
        compare_settings(read_json(path), settings, path, what=what, fresh=fresh)
    else:
        write_json(path, settings)


def compare_settings(saved: Any, settings: dict, where: str | os.PathLike, *, what: str = "settings",
                     fresh: str = "delete it to start afresh") -> None:
    """Raise unless `saved` equals `settings` after a JSON round trip (so tuples == lists).

    The compare-only twin of `check_settings`, for settings stored inside another file (a
    result or training state); `where` names that file in the message.

    Raises
    ------
    FormatError
        Naming `where`, the keys that differ (``key: saved -> now``, nested keys dotted) and
        `fresh`.
    """
    now = _finite(_plain(settings))  # as written: NaN and Infinity are null on disk
    saved = _finite(_plain(saved))
    if saved == now:
        return
    changes = _differences(saved, now, "")
    shown = ", ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
    raise FormatError(f"{where}: expected the same {what} as saved there, but got changes "
                      f"(saved -> now) {shown}; {fresh}.")


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=_json_default))


def _differences(saved: Any, now: Any, prefix: str) -> list[str]:
    """``key: saved -> now`` for every differing leaf; dict keys are followed and dotted."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now), key=str):
            a, b = saved.get(key, _ABSENT), now.get(key, _ABSENT)
            if a != b:
                out += _differences(a, b, f"{prefix}{key}.")
        return out
    return [f"{prefix.rstrip('.') or 'settings'}: {_brief(saved)} -> {_brief(now)}"]


_ABSENT = object()


def _brief(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


class PartStore:
    """Resumable output for long runs: results land in numbered, atomically written parts.

    A run killed at any point (even ``kill -9``) leaves only complete parts; a restarted run
    asks `done_chunks()` what to skip and `finish()` concatenates the parts into the final
    file. `settings` must match between runs, so a resumed run never mixes results computed
    with different options. A part may carry JSON notes (e.g. the frames it skipped), which
    `notes()` gathers over every part, whichever run wrote it.
    """

    def __init__(self, final_path: str | os.PathLike, settings: dict, *, resume: bool = True):
        self.final_path = Path(final_path)
        self.dir = self.parts_dir(final_path)
        if self.dir.exists() and not resume:
            shutil.rmtree(self.dir)
        check_settings(self.dir / "settings.json", settings, what="settings for this unfinished run",
                       fresh=f"delete {self.dir} or pass --no-resume to start again")

    @staticmethod
    def parts_dir(final_path: str | os.PathLike) -> Path:
        """The parts folder of `final_path`: while it exists, the output is unfinished."""
        final_path = Path(final_path)
        return final_path.with_name(final_path.name + ".parts")

    def _part(self, chunk: int) -> Path:
        return self.dir / f"part-{chunk:06d}.parquet"

    def done_chunks(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("part-*.parquet")}

    def write(self, chunk: int, frame, notes: list | None = None) -> None:
        """Write one part; its `notes` first, so a part on disk always has its notes."""
        if notes is not None:
            write_json(self._part(chunk).with_suffix(".notes.json"), notes)
        write_parquet(self._part(chunk), frame)

    def notes(self) -> list:
        """The notes of every finished part, in chunk order, concatenated."""
        out: list = []
        for chunk in sorted(self.done_chunks()):
            path = self._part(chunk).with_suffix(".notes.json")
            if path.exists():
                out.extend(read_json(path))
        return out

    def finish(self, sort_by: list[str] | None = None):
        """Concatenate all parts (in chunk order) into a DataFrame and remove the parts."""
        parts = [pd.read_parquet(self._part(c)) for c in sorted(self.done_chunks())]
        parts = [p for p in parts if len(p)]
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if sort_by and len(frame):
            frame = frame.sort_values(sort_by, kind="stable").reset_index(drop=True)
        return frame

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


LOCK_NAME = ".saseg.lock"
_held_locks: dict[str, list] = {}  # resolved folder -> [fd, depth]: this process's locks


@contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the one-writer lock of an output folder while the block runs.

    An OS lock (``flock``) on ``FOLDER/.saseg.lock``: the kernel drops it when its process
    ends, however it ends (``kill -9`` included), so a stale lock never blocks a later run
    and nothing ever needs cleaning up. The holder writes its pid into the file, so a second
    writer is refused with one line naming it. Re-entrant within a process (``score
    --quality`` applies the quality model to the run it holds); a flock held through another
    file descriptor of the same process would otherwise refuse its own holder.

    The pid stays in the file only when the writer stops without returning or raising an
    ordinary error (``kill -9``, Ctrl-C, a crash): `check_not_unfinished` then tells readers
    the folder may hold a mix of two runs' files. A writer that finishes, or fails with an
    error (usually before writing: a bad input), empties the file; one that fails having
    written nothing leaves no trace (`_discard_untouched`).

    Raises
    ------
    BusyError
        If another process holds the folder.
    """
    folder = Path(folder)
    made = _new_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key not in _held_locks and fcntl is not None:
        path = folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: held elsewhere
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "pid unknown"
            os.close(fd)
            raise BusyError(f"{folder} is being written by another saseg process ({holder}); wait "
                            "for it to finish, or write to another folder.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        _held_locks[key] = [fd, 0]
    _held_locks.setdefault(key, [None, 0])[1] += 1
    try:
        yield folder
    except Exception:
        if _release(key, finished=True):
            _discard_untouched(folder, made)
        raise
    except BaseException:
        _release(key, finished=False)
        raise
    else:
        _release(key, finished=True)


def _release(key: str, finished: bool) -> bool:
    """Drop one hold of a folder; True when it was this process's last."""
    entry = _held_locks[key]
    entry[1] -= 1
    if entry[1] == 0:
        del _held_locks[key]
        if entry[0] is not None:
            if finished:
                os.ftruncate(entry[0], 0)
            os.close(entry[0])  # closing the only descriptor releases the flock
    return entry[1] == 0


def _new_folders(folder: str | os.PathLike) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, innermost first: what a
    writer will make, and `_discard_untouched` may remove."""
    folder = Path(folder)
    return [p for p in (folder, *folder.parents) if not p.exists()]


def _discard_untouched(folder: str | os.PathLike, made: Sequence[Path] = ()) -> None:
    """Remove what a writer that failed before writing left: an output folder's empty lock
    file when it is all the folder holds, then the folders `made` (`_new_folders`, innermost
    first) as long as they are empty, so a refused command leaves no trace. Done under the
    lock; a folder another process holds, or that holds anything else, is left as it is."""
    path = Path(folder) / LOCK_NAME
    if fcntl is None or str(Path(folder).resolve()) in _held_locks:
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_size == 0 and [p.name for p in path.parent.iterdir()] == [LOCK_NAME]:
            path.unlink()
            for p in made:
                p.rmdir()  # raises (and stops) at the first that is not empty
    except OSError:
        pass
    finally:
        os.close(fd)


def check_not_unfinished(folder: str | os.PathLike) -> None:
    """Refuse to read a folder that a saseg command is writing, or stopped writing halfway.

    Its lock file (`output_lock`) names a pid while a writer holds it, and still does after a
    writer was killed: either way the folder may hold files of two runs. A folder this
    process holds, or one without a lock file (written by the library directly), passes.

    Raises
    ------
    BusyError
        If another process is writing the folder.
    DataError
        If the last writer stopped halfway.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    if fcntl is None or not path.is_file() or str(folder.resolve()) in _held_locks:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if not holder:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise BusyError(f"{folder} is being written by another saseg process ({holder}); wait "
                            "for it to finish.") from None
        raise DataError(f"{folder} was left unfinished by a saseg command that stopped halfway "
                        f"({holder}); rerun that command to finish it.")
    finally:
        os.close(fd)
