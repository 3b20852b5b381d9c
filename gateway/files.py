"""Small file helpers shared by every module that reads settings or writes durably."""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: no runtime dependency on typing_extensions
    from typing_extensions import TypeIs

from gateway.errors import ConfigError


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at `path`; ConfigError with one clear line if it cannot be had."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    except UnicodeDecodeError as exc:  # tomllib decodes the file itself and lets this through
        problem = f"{path}: invalid TOML: not UTF-8 (byte {exc.start}: {exc.reason})"
        raise ConfigError([problem]) from None


def is_number(value: object) -> TypeIs[int | float]:
    """A TOML number (TOML booleans are Python bools, which are ints too)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_upper_snake(name: Any) -> bool:
    """A symbol name as scores, rules and lists spell them: UPPER_SNAKE."""
    return isinstance(name, str) and name.isupper() and name.replace("_", "").isalnum()


# Mail, its verdicts and the quarantine index are private to the gateway's user whatever the
# umask (a 022 umask left the quarantine index and its WAL readable by every local user).
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def private_dir(path: str | Path) -> None:
    """Create `path` and any missing parents with mode 0700 (mkdir's `parents` ignores the
    mode for those), and make `path` itself 0700 if it already existed."""
    path = Path(path)
    missing = []
    while not path.is_dir() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            directory.mkdir(mode=PRIVATE_DIR_MODE)
    leaf = missing[0] if missing else path
    if leaf.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        os.chmod(leaf, PRIVATE_DIR_MODE)


def private_file(path: str | Path) -> None:
    """Create `path` empty with mode 0600 if it is missing; make it 0600 if it is not."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a rename or unlink in `path` durable (the file's own fsync does not cover it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, *, replace: bool) -> None:
    """Write `path` so that a crash leaves either nothing or all of it: a temporary file in
    the same directory, fsynced, then renamed over `path` (`replace`) or linked to it (never
    replacing: FileExistsError), and the directory fsynced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
