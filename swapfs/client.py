"""A swapfs mount seen from outside: its control files, and a mount run as a child
process. The command line, the scripts and the tests all drive mounts through here.

No pyfuse3 and no trio: plain files and processes.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from typing import IO

from . import errors
from .objects import MapRun, ObjectRow, parse_maps, parse_objects

__all__ = ["MountClient", "MountProcess", "parse_sysctl_text", "mount_table", "find_mount",
           "swapfs_mountpoints", "mount_of"]

CONTROL_DIR = ".swapfs"
# The control file that tells a process why its last control write failed.
WHY = "why"


def parse_sysctl_text(text: str) -> dict[str, str]:
    """``name: value`` lines (the ``sysctl`` file) as a dict."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            out[name] = value
    return out


class MountClient:
    """The control files of the mount at ``path`` (README, "Control files").

    Construction fails (SwapfsError) unless ``path`` has a control directory: with
    the errno of ``path`` itself (ENOENT, ENOTDIR, EACCES), else EINVAL.
    ``read`` and ``write`` raise OSError with the errno the daemon answered; a
    failed ``write``'s ``strerror`` is one line saying why (see ``write``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.ctl = os.path.join(self.path, CONTROL_DIR)
        if not os.path.isdir(self.ctl):
            try:
                os.stat(self.path)  # ENOENT, ENOTDIR, EACCES: that is the truth
                os.listdir(self.path)
            except OSError as exc:
                raise errors.from_oserror(exc, self.path) from None
            raise errors.InvalidArgument(f"{self.path}: not a swapfs mount")

    def read(self, name: str) -> str:
        with open(os.path.join(self.ctl, name), "rb") as f:
            return os.fsdecode(f.read())

    def write(self, name: str, line: str) -> None:
        """One write(2) of ``line`` and a newline, as the control files want.

        On failure, OSError with the errno and, as ``strerror``, the daemon's reason
        as its ``why`` file gives it (``swapon: /x: Device already in use (EBUSY)``),
        or, where the daemon gave none (the kernel refused the open), the same form
        made here: ``NAME: LINE: what the errno means here (ERRNO)``."""
        path = os.path.join(self.ctl, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._refusal(name, line, exc, from_daemon=False) from None
        try:
            os.write(fd, os.fsencode(line) + b"\n")
        except OSError as exc:
            raise self._refusal(name, line, exc, from_daemon=True) from None
        finally:
            os.close(fd)

    def _refusal(self, name: str, line: str, exc: OSError, from_daemon: bool) -> OSError:
        err = exc.errno or errno.EIO
        code = errno.errorcode.get(err, str(err))
        if from_daemon:
            try:
                why = self.read(WHY).strip()
            except OSError:
                why = ""
            # Another failure's line (a parent's, kept by the daemon) is not ours.
            if why.startswith(f"{name}: ") and why.endswith(f" ({code})"):
                return OSError(err, why)
        if err == errno.EACCES:
            try:
                owner = os.stat(os.path.join(self.ctl, name)).st_uid
            except OSError:
                owner = None
            what = ("only root and the mounting user"
                    + ("" if owner is None else f" (uid {owner})")
                    + f" may write {CONTROL_DIR}/{name}")
        else:
            what = os.strerror(err)
        return OSError(err, f"{name}: {line}: {what} ({code})")

    def sysctl(self) -> dict[str, str]:
        return parse_sysctl_text(self.read("sysctl"))

    def devices(self) -> list[str]:
        """The devices on the swap table, in table order."""
        return self.read("swapon").splitlines()

    def device_rows(self, values: dict[str, str] | None = None) -> list[dict[str, str]]:
        """The ``vm.swapfs.dev.N.*`` sysctls as one dict per device, in table order."""
        values = self.sysctl() if values is None else values
        devs: dict[int, dict[str, str]] = {}
        for key, value in values.items():
            parts = key.split(".")
            if len(parts) == 5 and parts[:3] == ["vm", "swapfs", "dev"] and parts[3].isdigit():
                devs.setdefault(int(parts[3]), {})[parts[4]] = value
        return [devs[k] for k in sorted(devs)]

    def device_row(self, path: str, values: dict[str, str] | None = None
                   ) -> dict[str, str] | None:
        """The row of the device named ``path`` (or its real path), or None."""
        real = os.path.realpath(path)
        for dev in self.device_rows(values):
            if dev.get("name") in (path, real):
                return dev
        return None

    def objects(self) -> list[ObjectRow]:
        """The ``objects`` file's rows."""
        return parse_objects(self.read("objects"))

    def maps(self) -> list[MapRun]:
        """The ``maps`` file's runs."""
        return parse_maps(self.read("maps"))

    def daemon_pid(self) -> int:
        return int(self.sysctl()["vm.swapfs.pid"])


def mount_of(path: str | os.PathLike) -> str:
    """The swapfs mount ``path`` lies on: the nearest mountpoint at or above it
    holding a control directory. SwapfsError (EINVAL) when there is none."""
    cur = os.path.abspath(os.fspath(path))
    while True:
        if os.path.ismount(cur):
            if os.path.isdir(os.path.join(cur, CONTROL_DIR)):
                return cur
            break  # another filesystem's mountpoint: nothing above is ours
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    raise errors.InvalidArgument(f"{os.fspath(path)}: not on a swapfs mount")


class MountError(errors.SwapfsError):
    """A mount run as a child process did not come up."""


class MountProcess:
    """``swapfs mount -f`` in a child process, as a context manager that yields a
    MountClient once the mount is live, and on exit unmounts and reaps the child.

    ``devices``: ``--device`` values; ``opts``: the ``-o`` string; ``env``: the
    child's environment (where its state directory is, say); ``stderr``: where the
    daemon's log goes (a file: its text is in MountError if the mount fails).
    ``command``: another FUSE daemon's whole command line instead (a peer in a
    benchmark), which must mount on ``mnt`` and stay in front; entering then yields
    None. ``returncode`` is the daemon's exit status after exit (None if it had to be
    killed).
    """

    def __init__(self, mnt: str | os.PathLike, devices: list[str] = (), opts: str | None = None,
                 *, command: list[str] | None = None, env: dict[str, str] | None = None,
                 stderr: IO[str] | None = None, extra: list[str] | None = None,
                 timeout: float = 20.0) -> None:
        self.mnt = os.fspath(mnt)
        self.swapfs = command is None
        if command is not None:
            self.cmd = list(command)
        else:
            self.cmd = [sys.executable, "-m", "swapfs", "mount", "-f"]
            for d in devices:
                self.cmd += ["--device", d]
            if opts:
                self.cmd += ["-o", opts]
            self.cmd += list(extra or []) + [self.mnt]
        self.env = env
        self.stderr = stderr
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    def __enter__(self) -> MountClient | None:
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr, env=self.env)
        deadline = time.monotonic() + self.timeout
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise MountError(f"{self.mnt}: swapfs did not mount "
                                 f"(exit status {self.returncode}){self._log()}")
            time.sleep(0.02)
        return MountClient(self.mnt) if self.swapfs else None

    def _log(self) -> str:
        name = getattr(self.stderr, "name", None)
        if isinstance(name, str) and os.path.exists(name):
            with open(name) as f:
                return ":\n" + f.read()
        return ""

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        assert proc is not None
        try:
            force_unmount(self.mnt)
            try:
                self.returncode = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            force_unmount(self.mnt)


def force_unmount(mnt: str | os.PathLike) -> None:
    """Best effort: fusermount3 -u, then a lazy one, until nothing is mounted."""
    for cmd in (["fusermount3", "-u", os.fspath(mnt)],
                ["fusermount3", "-u", "-z", os.fspath(mnt)]):
        if not os.path.ismount(mnt) and not dead_mount(mnt):
            return
        subprocess.run(cmd, capture_output=True)


def dead_mount(mnt: str | os.PathLike) -> bool:
    """Whether ``mnt`` is a mount whose daemon is gone (ENOTCONN)."""
    try:
        os.stat(mnt)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_table() -> list[tuple[str, str, str]]:
    """(mountpoint, fstype, source) of every mount this process sees, in mount order."""
    table = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            table.append((_unescape_mountinfo(parts[4]), parts[sep + 1],
                          _unescape_mountinfo(parts[sep + 2])))
    return table


def find_mount(path: str) -> tuple[str, str] | None:
    """(fstype, source) of the mount at ``path`` (the last one stacked), or None."""
    found = None
    for mountpoint, fstype, source in mount_table():
        if mountpoint == path:
            found = (fstype, source)
    return found


def swapfs_mountpoints() -> list[str]:
    """The mountpoints of every swapfs mount, in mount order."""
    return [mnt for mnt, fstype, _source in mount_table() if fstype == "fuse.swapfs"]
