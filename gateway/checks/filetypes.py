"""Blocked attachment types: the rules from `rules/attachments.toml` and the content sniffers.

A type is blocked by its file name's extension (also for names listed inside archives) or by
its first bytes, so renaming `invoice.exe` to `invoice.pdf` does not get it through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.files import read_toml

RULES_FILE = "attachments.toml"

# The types the gateway knows, each with the symbol it emits.
TYPE_SYMBOLS: Mapping[str, str] = {
    "executable": "ATTACH_EXECUTABLE",
    "script": "ATTACH_SCRIPT",
    "shortcut": "ATTACH_SHORTCUT",
    "disk_image": "ATTACH_DISK_IMAGE",
    "office_macro": "ATTACH_OFFICE_MACRO",
}

_LNK_HEADER = bytes.fromhex("4c0000000114020000000000c000000000000046")  # size + LinkCLSID
_OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")
_VBA_STREAM = "_VBA_PROJECT".encode("utf-16-le")  # OLE directory names are UTF-16LE
_MACHO_MAGICS = {bytes.fromhex(m) for m in ("feedface", "feedfacf", "cefaedfe", "cffaedfe")}
_ISO_OFFSETS = (0x8001, 0x8801, 0x9001)  # "CD001" in the first volume descriptors


def _iso9660(data: bytes) -> bool:
    return any(data[offset : offset + 5] == b"CD001" for offset in _ISO_OFFSETS)


def _portable_executable(data: bytes) -> bool:
    """MZ header whose e_lfanew points at a PE signature: "MZ" alone starts many text files."""
    if data[:2] != b"MZ" or len(data) < 0x40:
        return False
    offset = int.from_bytes(data[0x3C:0x40], "little")
    return data[offset : offset + 4] == b"PE\0\0"


def _ole_macro(data: bytes) -> bool:
    return data[:8] == _OLE_MAGIC and _VBA_STREAM in data


# name in attachments.toml -> (what it means, test on the whole decoded file)
SNIFFERS: Mapping[str, tuple[str, Callable[[bytes], bool]]] = {
    "pe": ("Windows executable (PE)", lambda d: _portable_executable(d)),
    "elf": ("ELF executable", lambda d: d[:4] == b"\x7fELF"),
    "macho": ("Mach-O executable", lambda d: d[:4] in _MACHO_MAGICS),
    "shebang": ("script (#!)", lambda d: d[:2] == b"#!"),
    "lnk": ("Windows shortcut", lambda d: d[:20] == _LNK_HEADER),
    "iso9660": ("ISO 9660 disk image", _iso9660),
    "vhd": ("VHD disk image", lambda d: b"conectix" in (d[:8], d[-512:-504])),
    "vhdx": ("VHDX disk image", lambda d: d[:8] == b"vhdxfile"),
    "dmg": ("Apple disk image", lambda d: d[-512:-508] == b"koly"),
    "ole_macro": ("OLE document with VBA macros", _ole_macro),
}
# Found by listing the archive, not by a sniffer: an OOXML document carrying a VBA project.
OOXML_MACRO = "ooxml_macro"
OOXML_MACRO_MEANING = "Office document with VBA macros (vbaProject.bin)"


@dataclass(frozen=True, slots=True)
class BlockedType:
    symbol: str
    extensions: frozenset[str]
    content: frozenset[str]  # sniffer names, plus OOXML_MACRO


@dataclass(frozen=True, slots=True)
class Match:
    symbol: str
    how: str  # "extension .exe" or "content ELF executable"


class TypeRules:
    """Which types are blocked; answers for a file name and for file content."""

    def __init__(self, types: Mapping[str, BlockedType]) -> None:
        self.types = dict(types)

    def by_name(self, name: str) -> list[Match]:
        extension = file_extension(name)
        if not extension:
            return []
        return [
            Match(t.symbol, f"extension .{extension}")
            for t in self.types.values()
            if extension in t.extensions
        ]

    def by_content(self, data: bytes) -> list[Match]:
        found = []
        for blocked in self.types.values():
            for sniffer in sorted(blocked.content - {OOXML_MACRO}):
                meaning, test = SNIFFERS[sniffer]
                if test(data):
                    found.append(Match(blocked.symbol, f"content {meaning}"))
                    break
        return found

    def ooxml_macro(self) -> Match | None:
        """The match for an archive holding a vbaProject.bin, if that is blocked."""
        for blocked in self.types.values():
            if OOXML_MACRO in blocked.content:
                return Match(blocked.symbol, f"content {OOXML_MACRO_MEANING}")
        return None


def file_extension(name: str) -> str:
    """The lower-case extension as Windows sees it: trailing dots and spaces do not count."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].rstrip(". \0")
    stem, dot, extension = base.rpartition(".")
    return extension.lower() if dot and stem else ""


def load_type_rules(path: Path) -> TypeRules:
    """Read attachments.toml; every problem is reported at once as a ConfigError."""
    data = read_toml(path)
    problems: list[str] = []
    types = {}
    for name, table in data.items():
        where = f"{RULES_FILE}: {name}"
        if name not in TYPE_SYMBOLS:
            problems.append(f"{where}: unknown type (known: {', '.join(TYPE_SYMBOLS)})")
            continue
        parsed = _parse_type(table, where, problems)
        if parsed is not None:
            types[name] = BlockedType(TYPE_SYMBOLS[name], *parsed)
    if problems:
        raise ConfigError(problems)
    return TypeRules(types)


def _parse_type(
    table: object, where: str, problems: list[str]
) -> tuple[frozenset[str], frozenset[str]] | None:
    if not isinstance(table, dict) or set(table) - {"extensions", "content"}:
        problems.append(f"{where}: expected a table with extensions and content")
        return None
    extensions, content = table.get("extensions", []), table.get("content", [])
    if not _string_list(extensions) or not _string_list(content):
        problems.append(f"{where}: extensions and content must be lists of strings")
        return None
    bad_extensions = [e for e in extensions if not e or "." in e or e != e.lower()]
    if bad_extensions:
        problems.append(
            f"{where}.extensions: write them lower case without a dot: {bad_extensions}"
        )
    known = set(SNIFFERS) | {OOXML_MACRO}
    unknown = sorted(set(content) - known)
    if unknown:
        problems.append(f"{where}.content: unknown {unknown} (known: {', '.join(sorted(known))})")
    if bad_extensions or unknown:
        return None
    return frozenset(extensions), frozenset(content)


def _string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
