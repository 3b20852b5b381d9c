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
