"""Atomic file writes and small JSON helpers: an output file is complete or absent."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


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
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    from .errors import FormatError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"Expected a JSON file at {path}, but it does not exist.") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"Expected valid JSON in {path}, but got: {exc}") from None


def write_parquet(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame to Parquet atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _json_default(obj: Any) -> Any:
    import numpy as np

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
    with different options.
    """

    def __init__(self, final_path: str | os.PathLike, settings: dict, *, resume: bool = True):
        import shutil

        from .errors import FormatError

        self.final_path = Path(final_path)
        self.dir = self.final_path.with_name(self.final_path.name + ".parts")
        settings_path = self.dir / "settings.json"
        if self.dir.exists() and not resume:
            shutil.rmtree(self.dir)
        if self.dir.exists() and settings_path.exists():
            previous = read_json(settings_path)
            if previous != json.loads(json.dumps(settings, default=_json_default)):
                raise FormatError(
                    f"Expected the unfinished run in {self.dir} to use the same settings, but they "
                    "differ; delete that folder or pass --no-resume to start again."
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(settings_path, settings)

    def _part(self, chunk: int) -> Path:
        return self.dir / f"part-{chunk:06d}.parquet"

    def done_chunks(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("part-*.parquet")}

    def write(self, chunk: int, frame) -> None:
        write_parquet(self._part(chunk), frame)

    def finish(self, sort_by: list[str] | None = None):
        """Concatenate all parts (in chunk order) into a DataFrame and remove the parts."""
        import shutil

        import pandas as pd

        parts = [pd.read_parquet(self._part(c)) for c in sorted(self.done_chunks())]
        parts = [p for p in parts if len(p)]
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if sort_by and len(frame):
            frame = frame.sort_values(sort_by, kind="stable").reset_index(drop=True)
        return frame

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)
