"""gateway/privileges.py: who serve becomes, the storage owner rule, and a drop that holds."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from gateway.config import ProcessConfig
from gateway.errors import GatewayError
from gateway.privileges import (
    Identity,
    drop_to,
    prepare_storage,
    storage_problem,
    target_identity,
    unreadable_for,
)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
NOBODY = pwd.getpwnam("nobody")


@as_root
def test_root_without_a_user_refuses_and_unknown_names_are_one_line() -> None:
    with pytest.raises(GatewayError, match=r"started as root without \[process\] user"):
        target_identity(ProcessConfig())
    with pytest.raises(GatewayError, match="no such user 'no-such-user'"):
        target_identity(ProcessConfig(user="no-such-user"))
    with pytest.raises(GatewayError, match="no such group 'no-such-group'"):
        target_identity(ProcessConfig(user="nobody", group="no-such-group"))
    assert target_identity(ProcessConfig(user="nobody")) == Identity(
        "nobody", NOBODY.pw_uid, NOBODY.pw_gid
    )
    assert target_identity(ProcessConfig(user="root")) == Identity("root", 0, 0)


def test_storage_must_be_the_users_and_not_world_writable(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    storage.mkdir(mode=0o700)
    me = os.geteuid()
    assert storage_problem(storage.stat(), me) is None
    assert "owned by" in (storage_problem(storage.stat(), me + 1) or "")
    storage.chmod(0o777)
    assert "writable by every user" in (storage_problem(storage.stat(), me) or "")
    with pytest.raises(GatewayError, match="writable by every user"):
        prepare_storage(storage, None)
    with pytest.raises(GatewayError, match="cannot use"):
        prepare_storage(Path("/etc/hostname/var"), None)  # under a file: not a directory


@as_root
def test_missing_storage_is_created_for_the_user(tmp_path: Path) -> None:
    storage = tmp_path / "new" / "var"
    prepare_storage(storage, Identity("nobody", NOBODY.pw_uid, NOBODY.pw_gid))
    info = storage.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (NOBODY.pw_uid, 0o700)


@as_root
def test_unreadable_paths_are_named(tmp_path: Path) -> None:
    nobody = Identity("nobody", NOBODY.pw_uid, NOBODY.pw_gid)
    model = tmp_path / "model.skops"  # pytest's tmp dirs are root's, 0700
    model.write_bytes(b"x")
    problem = unreadable_for(nobody, [model])
    assert problem is not None and "is not readable by [process] user nobody" in problem
    if unreadable_for(nobody, []) is None:  # this Python is readable: the model is the problem
        assert str(model) in problem
    else:  # a Python under /root (pyenv): named first, whatever else follows
        assert "must read" in problem


@as_root
def test_the_drop_cannot_be_undone() -> None:
    """In a child: after drop_to(nobody) every uid and gid is nobody's, the supplementary
    groups are gone, and setuid(0) fails."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        code = 1
        try:
            drop_to(Identity("nobody", NOBODY.pw_uid, NOBODY.pw_gid))
            ids = (*os.getresuid(), *os.getresgid(), *os.getgroups())
            try:
                os.setuid(0)
                regained = "yes"
            except PermissionError:
                regained = "no"
            os.write(write_end, f"{ids} {regained}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    report = os.read(read_end, 1024).decode()
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    assert report == f"{(uid, uid, uid, gid, gid, gid, gid)} no"
