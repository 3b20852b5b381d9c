"""Who `serve` runs as: started as root it binds its sockets (port 25, metrics), then becomes
[process] user before it reads any mail or model; and the storage directory must be that
user's alone (a spool others can write to is mail others can inject or read)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ProcessConfig
from gateway.errors import GatewayError


@dataclass(frozen=True)
class Identity:
    user: str
    uid: int
    gid: int


def target_identity(process: ProcessConfig) -> Identity | None:
    """The identity to drop to, None to stay as we are (not root, or user = "root" said so).
    GatewayError: started as root without a user, or a user or group that does not exist."""
    if not process.user:
        if os.geteuid() == 0:
            raise GatewayError(
                'started as root without [process] user: set user = "mailgate" (any unprivileged '
                'user owning [storage] dir) to drop to it after binding, or user = "root" to '
                "stay root knowingly"
            )
        if process.group:
            raise GatewayError("[process] group is set without [process] user")
        return None
    try:
        entry = pwd.getpwnam(process.user)
    except KeyError:
        raise GatewayError(f"[process] user: no such user {process.user!r}") from None
    gid = entry.pw_gid
    if process.group:
        try:
            gid = grp.getgrnam(process.group).gr_gid
        except KeyError:
            raise GatewayError(f"[process] group: no such group {process.group!r}") from None
    if os.geteuid() != 0 and (entry.pw_uid, gid) != (os.geteuid(), os.getegid()):
        raise GatewayError(
            f"[process] user {process.user!r}: only root can become another user "
            f"(running as uid {os.geteuid()})"
        )
    return Identity(process.user, entry.pw_uid, gid)


def prepare_storage(storage: Path, identity: Identity | None) -> None:
    """Create the storage directory when missing (for the identity), then refuse one that is
    owned by another user or writable by others. GatewayError with one line."""
    uid = identity.uid if identity else os.geteuid()
    try:
        if not storage.exists():
            storage.mkdir(mode=0o700, parents=True)
            if identity is not None and os.geteuid() == 0:
                os.chown(storage, identity.uid, identity.gid)
        info = storage.stat()
    except OSError as exc:
        raise GatewayError(f"cannot use [storage] dir {storage}: {exc.strerror or exc}") from None
    problem = storage_problem(info, uid)
    if problem:
        raise GatewayError(f"[storage] dir {storage}: {problem}")


def storage_problem(info: os.stat_result, uid: int) -> str | None:
    if not stat.S_ISDIR(info.st_mode):
        return "not a directory"
    if info.st_uid != uid:
        return (
            f"owned by {_user_name(info.st_uid)}, not by {_user_name(uid)} who runs the gateway "
            f"(chown -R {_user_name(uid)} it)"
        )
    if info.st_mode & stat.S_IWOTH:
        return "writable by every user (chmod o-w it; the gateway keeps it 0700)"
    return None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def unreadable_for(identity: Identity, paths: list[Path]) -> str | None:
    """The first of `paths` (with the interpreter's own library and packages) that `identity`
    could not read after the drop: the modules imported later, the model, the rules. A Python
    installed under /root (pyenv) is the usual case; once dropped, every import would fail."""
    code = [Path(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib")]
    code.append(Path(__file__).resolve().parent)
    groups = {identity.gid, *os.getgrouplist(identity.user, identity.gid)}
    for path in [*code, *paths]:
        for part in [*reversed(path.parents), path]:
            try:
                info = part.stat()
            except OSError:
                break  # missing: said elsewhere (config checks), not a permission matter
            want = 0o5 if stat.S_ISDIR(info.st_mode) else 0o4
            if info.st_uid == identity.uid:
                bits = (info.st_mode >> 6) & 0o7
            elif info.st_gid in groups:
                bits = (info.st_mode >> 3) & 0o7
            else:
                bits = info.st_mode & 0o7
            if bits & want != want:
                return (
                    f"{part} is not readable by [process] user {identity.user}, who must read "
                    f"{path} after the drop (install the gateway and Python where it can)"
                )
    return None


def become_storage_user(process: ProcessConfig) -> None:
    """queue, quarantine and learn run by root on a gateway's storage: as [process] user, so
    that the files they create (the quarantine's SQLite journal, spool entries, feedback) stay
    the gateway's; created as root, the gateway could no longer write them."""
    if os.geteuid() != 0 or not process.user:
        return
    identity = target_identity(process)
    if identity is not None and identity.uid != 0:
        drop_to(identity)


def drop_to(identity: Identity) -> None:
    """Become `identity` for good: supplementary groups, then gid, then uid (the order in
    which each step still has the right to do the next), then prove root cannot come back."""
    if os.geteuid() != 0:
        return  # already the user (target_identity checked)
    os.setgroups([identity.gid])
    os.setgid(identity.gid)
    os.setuid(identity.uid)
    if identity.uid == 0:
        return  # user = "root": asked to stay
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - a kernel that let us back would be a hole
        raise GatewayError(f"could regain root after dropping to {identity.user}: refusing")
    os.environ["HOME"] = pwd.getpwuid(identity.uid).pw_dir
