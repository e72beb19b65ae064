"""NBD exports as swap devices on a real mount, against real servers (nbdkit,
qemu-nbd) on unix sockets, on 127.0.0.1 and on simulated hosts: data through each
server, swapoff and swapon under fio's verify, a server killed, stalled, corrupting
or failing reads, bad input, and a host whose link goes down. What is checked is
what a user sees: errno, messages, data, control files; and no wait is unbounded.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import (
    PAGE,
    ctl,
    device_names,
    expect_errno,
    page_devices,
    pread_direct,
    read,
    requires_fuse,
    run_swapfs,
    state,
    sysctls,
    write,
)
from nbdservers import NetnsHosts, connect, hosts, leftovers, nbdkit, nbdkit_corrupting, \
    qemu_nbd

nbd = pytest.importorskip("nbd")

pytestmark = [
    requires_fuse,
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("nbdkit") is None, reason="needs nbdkit"),
]

MiB = 1 << 20
# The timeout the fault tests mount with (-o nbd_timeout=): short, so a stalled
# server is given up quickly, and MARGIN on top for everything else a request does.
TIMEOUT = 2.0
MARGIN = 2.5
# What fio prints when the data it reads back is not what it wrote.
MISMATCH = ("verify failed", "bad magic", "bad header", "verify: bad")
SERVER_NAMES = ("nbdkit", "qemu-nbd")

needs_qemu = pytest.mark.skipif(shutil.which("qemu-nbd") is None, reason="needs qemu-nbd")
needs_fio = pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")

# Every NetnsHosts a test made, for the fixture's check that none left anything.
_hosts_made: list[NetnsHosts] = []


# ---------------------------------------------------------------------- leftovers

def _our_servers() -> list[tuple[int, str]]:
    """(pid, name) of the NBD servers that are this process's children and alive."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm in SERVER_NAMES and int(fields[1]) == me and fields[0] != "Z":
            found.append((int(entry), comm))
    return found


def _our_net_names() -> set[str]:
    """The namespaces and links a NetnsHosts of this process makes by default."""
    probe = NetnsHosts(8)
    return ({f"netns {probe.netns(k)}" for k in range(8)}
            | {f"link {probe.link(k)}" for k in range(8)})


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """After each test: no NBD server it started is still running, and no network
    namespace, link or route of this run is left."""
    yield
    servers = _our_servers()
    for pid, _name in servers:  # not to spill into the next test
        os.kill(pid, signal.SIGKILL)
    left = sorted(_our_net_names() & set(leftovers()))
    for h in _hosts_made:
        left += h.remaining()
    _hosts_made.clear()
    assert not servers, f"NBD servers still running: {servers}"
    assert not left, f"left behind: {left}"


# ---------------------------------------------------------------------- helpers

def start_timed(fn, *args):
    """Start ``fn(*args)`` in a thread; returns ``finish(limit)``, which waits for it
    and gives (what it returned or the OSError it raised, seconds it took), and fails
    the test if it is still blocked after ``limit`` seconds."""
    out: dict = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            out["value"] = fn(*args)
        except OSError as exc:
            out["value"] = exc
        out["took"] = time.monotonic() - t0

    th = threading.Thread(target=run, daemon=True)
    th.start()

    def finish(limit: float):
        th.join(limit)
        assert not th.is_alive(), f"{getattr(fn, '__name__', fn)} still blocked after {limit} s"
        return out["value"], out["took"]

    return finish


def timed(fn, *args, limit: float):
    """``fn(*args)`` in a thread, waited for as ``start_timed`` says."""
    return start_timed(fn, *args)(limit)


def assert_eio(fn, *args, limit: float) -> float:
    """``fn(*args)`` fails with EIO within ``limit`` seconds; returns how long it took."""
    value, took = timed(fn, *args, limit=limit)
    assert isinstance(value, OSError), f"no error: got {type(value).__name__}"
    assert value.errno == errno.EIO, value
    return took


def write_file(path: Path, data: bytes, chunk: int = MiB) -> None:
    """``data`` written to ``path`` in ``chunk``-sized pwrites."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for off in range(0, len(data), chunk):
            part = data[off:off + chunk]
            assert os.pwrite(fd, part, off) == len(part)
    finally:
        os.close(fd)


def pwrite_direct(path: Path, data: bytes, off: int) -> int:
    """One O_DIRECT pwrite of ``data`` (whole pages) at ``off``."""
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        return os.pwritev(fd, [buf], off)
    finally:
        os.close(fd)


def wait_for(cond, limit: float, what: str) -> None:
    """Poll ``cond`` until it holds; fail the test after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        time.sleep(0.02)


def dev_row(mnt: Path, name: str) -> dict[str, str]:
    """The vm.swapfs.dev.N.* sysctls of the device ``name``."""
    values = sysctls(mnt)
    for k in range(int(values["vm.nswapdev"])):
        if values[f"vm.swapfs.dev.{k}.name"] == name:
            return {key.rsplit(".", 1)[1]: v for key, v in values.items()
                    if key.startswith(f"vm.swapfs.dev.{k}.")}
    raise AssertionError(f"{name} is not on the swap table: {read(mnt, 'swapon')}")


def lost_rows(mnt: Path) -> list[tuple[int, int, int, str, str]]:
    """The ``lost`` file's rows: (object, page, length, device, path)."""
    lines = read(mnt, "lost").splitlines()
    assert lines[0].split() == ["OBJECT", "PAGE", "LENGTH", "DEVICE", "PATH"], lines[0]
    rows = []
    for line in lines[1:]:
        obj, page, n, dev, path = line.split(None, 4)
        rows.append((int(obj), int(page), int(n), dev, path))
    return rows


def lost_pages(mnt: Path, path: Path) -> set[int]:
    """Pages of the file ``path`` the ``lost`` file lists."""
    return {p for _o, page, n, _d, name in lost_rows(mnt) if name == str(path)
            for p in range(page, page + n)}


def swapfs(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_swapfs(*args, state_home=tmp_path / "state", timeout=timeout)


def on_server(uri: str, mnt_file: Path, data: bytes, every: int = 1) -> None:
    """The file's pages are on the export ``uri`` as they were written: read back by a
    client of our own at the device pages its map gives."""
    h = connect(uri)
    try:
        checked = 0
        for p, (dev, devpage) in sorted(page_devices(mnt_file).items())[::every]:
            assert dev == uri
            # What is on the server is the page as written (checksums live elsewhere).
            assert h.pread(PAGE, devpage * PAGE) == data[p * PAGE:(p + 1) * PAGE], p
            checked += 1
        assert checked
    finally:
        h.shutdown()


def start(kind: str, tmp_path: Path, size: str = "64M"):
    if kind == "nbdkit":
        return nbdkit(tmp_path, size)
    return qemu_nbd(tmp_path, size)


# ---------------------------------------------------------------------- data

@pytest.mark.parametrize("how", ["--device", "-o device=", "swapon"])
@pytest.mark.parametrize("kind", ["nbdkit", pytest.param("qemu-nbd", marks=needs_qemu)])
def test_data_through_the_server(mount_factory, tmp_path: Path, kind: str, how: str) -> None:
    local = f"{tmp_path}/local.swap"
    with start(kind, tmp_path) as server:
        uri = server.uri
        if how == "--device":
            kw = dict(devices=[uri], opts="xattr,nbd_connections=2")
        elif how == "-o device=":
            kw = dict(devices=[], opts=f"xattr,device={uri}")
        else:
            kw = dict(devices=[f"{local}:64M"], opts="xattr")
        with mount_factory(**kw) as mnt:
            if how == "swapon":
                r = swapfs(tmp_path, "swapon", str(mnt), uri, "-p", "5", "--discard")
                assert r.returncode == 0 and r.stderr == "", r.stderr
                assert read(mnt, "swapon") == f"{local}\n{uri}\n"
            else:
                assert read(mnt, "swapon") == f"{uri}\n"
            row = dev_row(mnt, uri)
            assert row["npages"] == str(64 * MiB // PAGE) and row["down"] == "0"
            if how == "--device":
                assert row["connections"] == "2"  # both servers allow several
            data = os.urandom(24 * MiB)
            write_file(mnt / "f", data)
            assert device_names(mnt / "f") == {uri}
            # Every page from the daemon, which reads it from the server.
            assert pread_direct(mnt / "f", 0, len(data)) == data
            on_server(uri, mnt / "f", data, every=97)
            # Overwrite a part in place, with O_DIRECT: reads see the new bytes.
            patch = os.urandom(3 * MiB)
            pwrite_direct(mnt / "f", patch, 5 * MiB)
            data = data[:5 * MiB] + patch + data[8 * MiB:]
            assert pread_direct(mnt / "f", 0, len(data)) == data
            if how == "swapon":
                # discard: the blocks of a file removed go back to the server, in
                # whole 64 KiB chunks (read back as zeros there).
                g = os.urandom(MiB)
                write_file(mnt / "g", g)
                on_server(uri, mnt / "g", g)
                freed = {devpage for _dev, devpage in page_devices(mnt / "g").values()}
                chunks = [d for d in freed if d % 16 == 0 and set(range(d, d + 16)) <= freed]
                assert len(chunks) >= 8
                os.unlink(mnt / "g")
                h = connect(uri)
                try:
                    wait_for(lambda: all(h.pread(16 * PAGE, d * PAGE) == bytes(16 * PAGE)
                                         for d in chunks), 10, "the freed chunks trimmed")
                finally:
                    h.shutdown()
                # Back to the local file: every page moves, and reads the same.
                r = swapfs(tmp_path, "swapoff", str(mnt), uri)
                assert r.returncode == 0, r.stderr
                assert read(mnt, "swapon") == f"{local}\n"
                assert device_names(mnt / "f") == {local}
                assert pread_direct(mnt / "f", 0, len(data)) == data


# ---------------------------------------------------------------------- bad input

def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_input_is_refused_with_one_line_and_changes_nothing(mount_factory,
                                                                 tmp_path: Path) -> None:
    absent = f"nbd+unix:///?socket={tmp_path}/absent.sock"
    refused = f"nbd://127.0.0.1:{_free_tcp_port()}/"
    local = f"{tmp_path}/local.swap"
    with nbdkit(tmp_path, "16M") as server, \
            mount_factory(devices=[f"{local}:16M"]) as mnt:
        uri = server.uri
        before = state(mnt)
        # No server behind the URI: swapon says so in one line, and nothing changed.
        r = swapfs(tmp_path, "swapon", str(mnt), absent, timeout=30)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr == (f"swapfs: swapon: {absent}: connect: No such file or directory "
                            f"(ENOENT)\n")
        assert state(mnt) == before
        expect_errno(mnt, "swapon", f"{refused}\n".encode(), errno.ECONNREFUSED)
        assert re.fullmatch(f"swapon: {re.escape(refused)}: .*Connection refused "
                            r"\(ECONNREFUSED\)\n", read(mnt, "why")), read(mnt, "why")
        expect_errno(mnt, "swapon", f"{absent}\n".encode(), errno.ENOENT)
        # The size of an export is the export's: a SIZE after a URI is refused, even
        # where a server answers.
        r = swapfs(tmp_path, "swapon", str(mnt), uri, "16M")
        assert r.returncode == 1
        assert r.stderr == (f"swapfs: swapon: {uri}: the size of a URI device comes from "
                            f"its export (EINVAL)\n")
        expect_errno(mnt, "swapon", f"{uri} 16M\n".encode(), errno.EINVAL)
        expect_errno(mnt, "swapon", f"{uri} 16M pri=3\n".encode(), errno.EINVAL)
        # Nor is a URI swapped off that is not on the table.
        r = swapfs(tmp_path, "swapoff", str(mnt), uri)
        assert r.returncode == 1
        assert r.stderr == f"swapfs: swapoff: {uri}: not a swap device (EINVAL)\n"
        expect_errno(mnt, "sysctl", b"vm.swapfs.nbd_timeout=abc\n", errno.EINVAL)
        assert state(mnt) == before
        # The same URI, right, is taken; twice is busy.
        r = swapfs(tmp_path, "swapon", str(mnt), uri)
        assert r.returncode == 0, r.stderr
        assert read(mnt, "swapon") == f"{local}\n{uri}\n"
        expect_errno(mnt, "swapon", f"{uri}\n".encode(), errno.EBUSY)

        # At mount: a bad nbd_timeout, a size after a URI, no server. The mount
        # fails with one line and leaves no mount behind.
        other = tmp_path / "other"
        other.mkdir()
        for args, line in (
                (["-o", "nbd_timeout=abc"],
                 "nbd_timeout=abc: not a number of seconds from 0.1 to 3600"),
                (["--device", f"{uri},16M"],
                 f"{uri}: the size of a URI device comes from its export"),
                (["--device", absent], f"{absent}: connect: No such file or directory")):
            r = swapfs(tmp_path, "mount", "--device", f"{tmp_path}/other.swap:16M", *args,
                       str(other), timeout=30)
            assert r.returncode != 0, args
            assert r.stderr.startswith(f"swapfs: {line}"), (args, r.stderr)
            assert len(r.stderr.splitlines()) == 1, r.stderr
            assert not os.path.ismount(other)
            # The backing file the mount would have created is not left behind.
            assert not (tmp_path / "other.swap").exists()


def test_one_export_under_two_names_is_taken_once(mount_factory, tmp_path: Path) -> None:
    # Two devices on one export would overwrite each other's pages.
    with nbdkit(tmp_path, "16M") as unix_server, \
            nbdkit(tmp_path, "16M", unix=False) as tcp_server, \
            mount_factory(devices=[unix_server.uri, tcp_server.uri]) as mnt:
        link = tmp_path / "link.sock"
        link.symlink_to(unix_server.socket)
        port = tcp_server.port
        before = state(mnt)
        for other in (f"nbd+unix:///?socket={link}",
                      f"nbd+unix:///?socket={tmp_path}/./{unix_server.socket.name}",
                      f"nbd://127.0.0.1:{port}", f"nbd://localhost:{port}/"):
            r = swapfs(tmp_path, "swapon", str(mnt), other)
            assert r.returncode == 1
            assert r.stderr == f"swapfs: swapon: {other}: Device already in use (EBUSY)\n"
            assert state(mnt) == before
        data = os.urandom(4 * MiB)
        write_file(mnt / "f", data)
        assert pread_direct(mnt / "f", 0, len(data)) == data
        # Likewise at mount.
        other = tmp_path / "other"
        other.mkdir()
        r = swapfs(tmp_path, "mount", "--device", tcp_server.uri, "--device",
                   f"nbd://127.0.0.1:{port}", str(other), timeout=30)
        assert r.returncode != 0
        assert r.stderr == f"swapfs: nbd://127.0.0.1:{port}: Device already in use\n", \
            r.stderr
        assert not os.path.ismount(other)


# ---------------------------------------------------------------------- a server killed

DD_LOOP = r"""
i=0
while [ ! -e "$1" ]; do
    dd if="$2" of="$3/$i" bs=256k oflag=direct status=none || echo "dd $i: exit $?"
    i=$((i + 1))
done
echo "files $i"
"""


def test_server_killed_under_load(mount_factory, tmp_path: Path) -> None:
    local = f"{tmp_path}/local.swap"
    port = _free_tcp_port()
    server = nbdkit(tmp_path, "64M", unix=False, port=port)
    uri = server.uri
    try:
        with mount_factory(devices=[f"{local}:64M"],
                           opts=f"xattr,nbd_timeout={TIMEOUT:g}") as mnt:
            safe = os.urandom(4 * MiB)
            write_file(mnt / "safe", safe)
            r = swapfs(tmp_path, "swapon", str(mnt), uri, "-p", "5")
            assert r.returncode == 0, r.stderr
            old = os.urandom(8 * MiB)
            write_file(mnt / "old", old)
            assert device_names(mnt / "old") == {uri}
            assert device_names(mnt / "safe") == {local}

            # Load: a dd loop writing 1 MiB files with O_DIRECT, until told to stop.
            src = tmp_path / "src"
            src.write_bytes(os.urandom(MiB))
            load, stop = mnt / "load", tmp_path / "stop"
            load.mkdir()
            loop = subprocess.Popen(["bash", "-c", DD_LOOP, "loop", str(stop), str(src),
                                     str(load)], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            try:
                wait_for(lambda: len(os.listdir(load)) >= 4, 20, "the dd loop's files")
                server.kill()
                # A read of its pages: EIO at once (the connection broke), no hang.
                assert_eio(pread_direct, mnt / "old", 0, len(old), limit=TIMEOUT + MARGIN)
                assert dev_row(mnt, uri)["down"] == "1"
                # The load goes on: a few more files, each on the local device.
                n = len(os.listdir(load))
                wait_for(lambda: len(os.listdir(load)) >= n + 3, 20, "dd going on")
                new = os.urandom(4 * MiB)
                value, _took = timed(write_file, mnt / "new", new, limit=TIMEOUT + MARGIN)
                assert value is None, value
                assert device_names(mnt / "new") == {local}
                assert pread_direct(mnt / "new", 0, len(new)) == new
            finally:
                stop.touch()
                try:
                    out, _ = loop.communicate(timeout=30)
                finally:
                    if loop.poll() is None:
                        loop.kill()
                        loop.wait()
            assert out.splitlines()[-1].startswith("files "), out
            assert "dd " not in out, out  # no write failed
            # fsync: a file whose writes went with the server is told (EIO); the
            # others sync.
            for name, err in (("old", errno.EIO), ("safe", None), ("new", None)):
                fd = os.open(mnt / name, os.O_RDWR)
                try:
                    value, _took = timed(os.fsync, fd, limit=MARGIN)
                    assert getattr(value, "errno", None) == err, (name, value)
                finally:
                    os.close(fd)
            # The daemon lives, and says which device is down.
            r = swapfs(tmp_path, "info", "-v", str(mnt))
            assert r.returncode == 0, r.stderr
            rows = {line.split()[0]: line.split()[-1] for line in r.stdout.splitlines()[1:]}
            assert rows[uri] == "down" and rows[local] == "active", r.stdout
            assert lost_rows(mnt) == []
            # Down, it stays on the table until swapped off: its URI is taken.
            expect_errno(mnt, "swapon", f"{uri}\n".encode(), errno.EBUSY)
            on_nbd = int(dev_row(mnt, uri)["used"])
            assert on_nbd >= len(old) // PAGE

            # swapoff of the dead device completes; its pages are lost, and said so.
            r = swapfs(tmp_path, "swapoff", str(mnt), uri, timeout=30)
            assert r.returncode == 0, r.stderr
            assert r.stderr.splitlines()[-2].startswith(
                f"swapoff: {uri}: {on_nbd} pages given up in "), r.stderr
            assert r.stderr.endswith(
                f"swapoff: {uri}: the device was down: {on_nbd} pages are lost; "
                f"their files are listed in {ctl(mnt, 'lost')}\n"), r.stderr
            assert read(mnt, "swapon") == f"{local}\n"
            assert sysctls(mnt)["vm.swapfs.lost_pages"] == str(on_nbd)
            rows = lost_rows(mnt)
            assert {d for _o, _p, _n, d, _f in rows} == {uri}
            assert sum(n for _o, _p, n, _d, _f in rows) == on_nbd
            assert lost_pages(mnt, Path("/old")) == set(range(len(old) // PAGE))
            # Lost pages read EIO; every other page reads back as written.
            assert_eio(pread_direct, mnt / "old", 0, len(old), limit=MARGIN)
            assert_eio(pread_direct, mnt / "old", 100 * PAGE, PAGE, limit=MARGIN)
            assert pread_direct(mnt / "safe", 0, len(safe)) == safe
            assert pread_direct(mnt / "new", 0, len(new)) == new
            want = src.read_bytes()
            intact = 0
            for name in sorted(os.listdir(load), key=int):
                gone = lost_pages(mnt, Path("/load") / name)
                if not gone:
                    assert pread_direct(load / name, 0, MiB) == want, name
                    intact += 1
                    continue
                for p in range(MiB // PAGE):
                    if p in gone:
                        assert_eio(pread_direct, load / name, p * PAGE, PAGE, limit=MARGIN)
                    else:
                        assert pread_direct(load / name, p * PAGE, PAGE) == \
                            want[p * PAGE:(p + 1) * PAGE], (name, p)
            assert intact >= 3
            # A part of a lost page cannot be written (the rest of it is not known);
            # a whole page can, and then reads as written.
            fd = os.open(mnt / "old", os.O_WRONLY)
            try:
                with pytest.raises(OSError) as ei:
                    os.pwrite(fd, b"x" * 100, 7 * PAGE + 10)
                assert ei.value.errno == errno.EIO
            finally:
                os.close(fd)
            page = os.urandom(PAGE)
            assert pwrite_direct(mnt / "old", page, 7 * PAGE) == PAGE
            assert pread_direct(mnt / "old", 7 * PAGE, PAGE) == page
            assert 7 not in lost_pages(mnt, Path("/old"))
            assert sysctls(mnt)["vm.swapfs.lost_pages"] == str(on_nbd - 1)
            # A file removed takes its lost pages with it; a truncate below them too.
            os.unlink(mnt / "old")
            assert sysctls(mnt)["vm.swapfs.lost_pages"] == str(on_nbd - len(old) // PAGE)
            assert "/old" not in {f for _o, _p, _n, _d, f in lost_rows(mnt)}
            hit = min(lost_rows(mnt))[4]
            os.truncate(mnt / hit.lstrip("/"), 0)
            assert hit not in {f for _o, _p, _n, _d, f in lost_rows(mnt)}
            assert pread_direct(mnt / hit.lstrip("/"), 0, PAGE) == b""
            assert sysctls(mnt)["vm.swapfs.lost_pages"] == str(
                sum(n for _o, _p, n, _d, _f in lost_rows(mnt)))

            # A new server at the same address: the same URI swaps on again.
            server = nbdkit(tmp_path, "64M", unix=False, port=port)
            assert server.uri == uri
            r = swapfs(tmp_path, "swapon", str(mnt), uri, "-p", "5")
            assert r.returncode == 0, r.stderr
            assert read(mnt, "swapon") == f"{local}\n{uri}\n"
            assert dev_row(mnt, uri)["down"] == "0"
            again = os.urandom(4 * MiB)
            write_file(mnt / "again", again)
            assert device_names(mnt / "again") == {uri}
            assert pread_direct(mnt / "again", 0, len(again)) == again
    finally:
        server.kill()


def test_server_killed_during_its_swapoff(mount_factory, tmp_path: Path) -> None:
    local = f"{tmp_path}/local.swap"
    # Slow reads, so that the swapoff is still moving pages when the server dies.
    with nbdkit(tmp_path, "64M", filters=["delay"], params=["rdelay=50ms"]) as server, \
            mount_factory(devices=[f"{local}:64M", f"{server.uri},pri=5"],
                          opts=f"xattr,nbd_timeout={TIMEOUT:g}") as mnt:
        uri = server.uri
        data = os.urandom(16 * MiB)
        write_file(mnt / "f", data)
        assert device_names(mnt / "f") == {uri}
        out: dict = {}

        def swapoff() -> None:
            out["r"] = swapfs(tmp_path, "swapoff", str(mnt), uri, timeout=60)

        closer = threading.Thread(target=swapoff)
        closer.start()
        try:
            wait_for(lambda: int(dev_row(mnt, uri)["swapoff_moved"]) > 0, 20,
                     "the swapoff moving pages")
            server.kill()
        finally:
            closer.join(TIMEOUT + 30)
        assert not closer.is_alive(), "swapoff still running"
        r = out["r"]
        assert r.returncode == 0, r.stderr
        lost = lost_pages(mnt, Path("/f"))
        npages = len(data) // PAGE
        assert 0 < len(lost) < npages
        # What was moved before the server died is on the local file and reads back;
        # the rest is lost, and the summary says which is which.
        moved = npages - len(lost)
        assert r.stderr.splitlines()[-2].startswith(f"swapoff: {uri}: {moved} pages moved in "), \
            r.stderr
        assert f"the device was down: {len(lost)} pages are lost" in r.stderr, r.stderr
        assert read(mnt, "swapon") == f"{local}\n"
        assert set(page_devices(mnt / "f")) == set(range(npages)) - lost
        for off in range(0, len(data), 16 * PAGE):
            pages = set(range(off // PAGE, off // PAGE + 16))
            if pages <= lost:
                assert_eio(pread_direct, mnt / "f", off, 16 * PAGE, limit=MARGIN)
            elif pages & lost:
                for p in sorted(pages):
                    if p in lost:
                        assert_eio(pread_direct, mnt / "f", p * PAGE, PAGE, limit=MARGIN)
                    else:
                        assert pread_direct(mnt / "f", p * PAGE, PAGE) == \
                            data[p * PAGE:(p + 1) * PAGE]
            else:
                assert pread_direct(mnt / "f", off, 16 * PAGE) == data[off:off + 16 * PAGE]


# ---------------------------------------------------------------------- a server stalled

def test_stalled_server_is_eio_within_the_timeout_and_writes_go_elsewhere(
        mount_factory, tmp_path: Path) -> None:
    local = f"{tmp_path}/local.swap"
    with nbdkit(tmp_path, "64M") as server, \
            mount_factory(devices=[f"{server.uri},pri=5", f"{local}:64M"],
                          opts=f"xattr,nbd_timeout={TIMEOUT:g}") as mnt:
        uri = server.uri
        assert sysctls(mnt)["vm.swapfs.nbd_timeout"] == f"{TIMEOUT:g}"
        old = os.urandom(4 * MiB)
        write_file(mnt / "old", old)
        assert device_names(mnt / "old") == {uri}
        (mnt / "new").touch()
        new = os.urandom(2 * MiB)
        server.pause()
        reading = start_timed(pread_direct, mnt / "old", 0, len(old))
        time.sleep(0.2)
        # Meanwhile a write: it may be given blocks on the stalled device first.
        writing = start_timed(pwrite_direct, mnt / "new", new, 0)
        err, took = reading(TIMEOUT + MARGIN)
        assert isinstance(err, OSError) and err.errno == errno.EIO, err
        # Not before the timeout: a stalled server looks like a slow one until then.
        assert TIMEOUT - 0.5 <= took <= TIMEOUT + MARGIN, took
        wrote, took = writing(TIMEOUT + MARGIN)
        assert wrote == len(new), wrote
        assert device_names(mnt / "new") == {local}
        assert pread_direct(mnt / "new", 0, len(new)) == new
        assert dev_row(mnt, uri)["down"] == "1"
        # Given up, it goes at once; its pages are lost.
        value, _took = timed(write, mnt, "swapoff", f"{uri}\n".encode(), limit=MARGIN)
        assert value is None, value
        assert read(mnt, "swapon") == f"{local}\n"
        assert lost_pages(mnt, Path("/old")) == set(range(len(old) // PAGE))
        # A server that does not answer cannot be swapped on: refused after the timeout.
        before = state(mnt)
        r = swapfs(tmp_path, "swapon", str(mnt), uri, timeout=TIMEOUT + 30)
        assert r.returncode == 1
        assert r.stderr == f"swapfs: swapon: {uri}: no answer within {TIMEOUT:g} s (ETIMEDOUT)\n"
        assert state(mnt) == before
        # Once it answers again, it can; the lost pages stay lost, the rest reads.
        server.resume()
        r = swapfs(tmp_path, "swapon", str(mnt), uri, "-p", "5")
        assert r.returncode == 0, r.stderr
        assert dev_row(mnt, uri)["down"] == "0"
        assert_eio(pread_direct, mnt / "old", 0, PAGE, limit=MARGIN)
        assert pread_direct(mnt / "new", 0, len(new)) == new
        more = os.urandom(MiB)
        write_file(mnt / "more", more)
        assert device_names(mnt / "more") == {uri}
        assert pread_direct(mnt / "more", 0, len(more)) == more


def test_swapoff_of_a_stalled_server_gives_its_pages_up_after_the_timeout(
        mount_factory, tmp_path: Path) -> None:
    local = f"{tmp_path}/local.swap"
    with nbdkit(tmp_path, "64M") as server, \
            mount_factory(devices=[f"{local}:64M"],
                          opts=f"xattr,nbd_timeout={TIMEOUT:g}") as mnt:
        uri = server.uri
        data, safe = os.urandom(4 * MiB), os.urandom(MiB)
        write_file(mnt / "safe", safe)
        write(mnt, "swapon", f"{uri} pri=5\n".encode())
        write_file(mnt / "f", data)
        assert device_names(mnt / "f") == {uri} and device_names(mnt / "safe") == {local}
        server.pause()
        # The swapoff's first read finds the server stalled: after the timeout the
        # device is down, its pages are given up, and the swapoff completes.
        r = swapfs(tmp_path, "swapoff", str(mnt), uri, timeout=TIMEOUT + 30)
        assert r.returncode == 0, r.stderr
        # None moved (the summary says so), all lost.
        summary = r.stderr.splitlines()[-2:]
        assert summary[0].startswith(f"swapoff: {uri}: 0 pages moved in "), r.stderr
        assert summary[1].startswith(f"swapoff: {uri}: the device was down: "
                                     f"{len(data) // PAGE} pages are lost;"), r.stderr
        assert read(mnt, "swapon") == f"{local}\n"
        assert lost_pages(mnt, Path("/f")) == set(range(len(data) // PAGE))
        assert_eio(pread_direct, mnt / "f", 0, len(data), limit=MARGIN)
        assert pread_direct(mnt / "safe", 0, len(safe)) == safe


# ---------------------------------------------------------------------- wrong bytes, errors

def test_wrong_bytes_from_the_server_are_eio_never_data(mount_factory, tmp_path: Path) -> None:
    trigger = tmp_path / "corrupt"
    with nbdkit_corrupting(tmp_path, "16M", trigger=trigger) as server, \
            mount_factory(devices=[server.uri], opts="xattr") as mnt:
        data = os.urandom(MiB)
        write_file(mnt / "f", data)
        assert device_names(mnt / "f") == {server.uri}
        assert pread_direct(mnt / "f", 0, len(data)) == data
        trigger.touch()
        # Every read of the file's pages: EIO, never the bytes the server sent.
        assert_eio(pread_direct, mnt / "f", 0, len(data), limit=10)
        for p in (0, 1, 100, 255):
            assert_eio(pread_direct, mnt / "f", p * PAGE, PAGE, limit=10)
        s = sysctls(mnt)
        assert int(s["vm.swapfs.checksum_errors"]) >= 4
        assert dev_row(mnt, server.uri)["down"] == "0"
        # The server reads true again: so does every page.
        trigger.unlink()
        assert pread_direct(mnt / "f", 0, len(data)) == data


def test_a_server_side_read_error_is_eio_and_the_device_stays_up(mount_factory,
                                                                  tmp_path: Path) -> None:
    trigger = tmp_path / "fail"
    with nbdkit(tmp_path, "16M", filters=["error"],
                params=["error-pread=EIO", "error-pread-rate=1",
                        f"error-pread-file={trigger}"]) as server, \
            mount_factory(devices=[server.uri],
                          opts=f"xattr,nbd_timeout={TIMEOUT:g}") as mnt:
        uri = server.uri
        data = os.urandom(MiB)
        write_file(mnt / "f", data)
        trigger.touch()
        took = assert_eio(pread_direct, mnt / "f", 0, len(data), limit=TIMEOUT + MARGIN)
        assert took < TIMEOUT  # the server answered: no timeout involved
        assert_eio(pread_direct, mnt / "f", 10 * PAGE, PAGE, limit=TIMEOUT + MARGIN)
        # Up: it takes writes as before, and says so.
        assert dev_row(mnt, uri)["down"] == "0"
        more = os.urandom(MiB)
        write_file(mnt / "g", more)
        assert device_names(mnt / "g") == {uri}
        r = swapfs(tmp_path, "info", "-v", str(mnt))
        assert r.stdout.splitlines()[1].split()[-1] == "active", r.stdout
        trigger.unlink()
        assert pread_direct(mnt / "f", 0, len(data)) == data
        assert pread_direct(mnt / "g", 0, len(more)) == more
        assert dev_row(mnt, uri)["down"] == "0"


# ---------------------------------------------------------------------- swapoff, swapon under fio

def fio_cmd(mnt: Path, size: str, *extra: str, name: str = "verify.dat") -> list[str]:
    """fio writing ``size`` of MNT/name in random 4 KiB and 64 KiB blocks with
    O_DIRECT (every read reaches the daemon), and reading it back to check it."""
    return ["fio", "--name=load", f"--filename={mnt}/{name}", f"--size={size}",
            "--ioengine=psync", "--rw=randwrite", "--bssplit=4k/50:64k/50", "--direct=1",
            "--verify=crc32c", "--do_verify=1", "--verify_state_save=0",
            "--fallocate=none", *extra]


def fio_ok(out: str, returncode: int) -> None:
    """fio exited 0, with no error and no mismatch, having read back what it wrote."""
    assert returncode == 0, out
    assert not any(m in out for m in MISMATCH), out
    assert " err= 0" in out, out
    reads = re.search(r"issued rwts: total=(\d+),", out)
    assert reads and int(reads.group(1)) > 0, out  # it did verify


@needs_fio
def test_swapoff_and_swapon_between_an_export_and_a_file_under_fio_verify(
        mount_factory, tmp_path: Path) -> None:
    local = f"{tmp_path}/local.swap"
    with nbdkit(tmp_path, "64M") as server, \
            mount_factory(devices=[f"{local}:64M", server.uri],
                          opts="nbd_timeout=5") as mnt:
        uri = server.uri
        # Checked as it goes (verify_backlog): a time-based run has no read phase.
        fio = subprocess.Popen(fio_cmd(mnt, "24M", "--verify_backlog=1024", "--time_based",
                                       "--runtime=8"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: int(dev_row(mnt, uri)["used"]) > 500, 20, "pages on the export")
            for dev, other in ((uri, local), (local, uri), (uri, local)):
                assert fio.poll() is None, fio.stdout.read()  # under load
                value, _took = timed(write, mnt, "swapoff", f"{dev}\n".encode(), limit=60)
                assert value is None, value
                assert read(mnt, "swapon") == f"{other}\n"
                write(mnt, "swapon", f"{dev}\n".encode())
                wait_for(lambda: int(dev_row(mnt, dev)["used"]) > 500 or fio.poll() is not None,
                         20, f"pages on {dev} again")
            out, _ = fio.communicate(timeout=60)
        finally:
            if fio.poll() is None:
                fio.kill()
                fio.wait()
        fio_ok(out, fio.returncode)
        assert sysctls(mnt)["vm.swapfs.lost_pages"] == "0"


# ---------------------------------------------------------------------- several hosts

# fio's line for a failed I/O: "fio: io_u error on file F: Input/output error: read
# offset=N, buflen=M".
IO_U_ERROR = re.compile(r"io_u error on file (\S+): (.*?): (read|write) offset=(\d+), "
                        r"buflen=(\d+)")


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
@needs_fio
@pytest.mark.parametrize("drop", [False, True], ids=["link-down", "packets-dropped"])
def test_one_of_three_hosts_goes_away_under_fio(mount_factory, tmp_path: Path,
                                                drop: bool) -> None:
    with hosts(3) as h:
        _hosts_made.append(h)
        uris = [h.nbdkit(k, tmp_path, "64M").uri for k in range(3)]
        assert uris == [f"nbd://{h.addr(k)}:10809/" for k in range(3)]
        gone = uris[1]
        with mount_factory(devices=uris, opts=f"xattr,nbd_timeout={TIMEOUT:g}") as mnt:
            # A file on every host, written before anything goes wrong.
            steady = os.urandom(6 * MiB)
            write_file(mnt / "steady", steady)
            where = page_devices(mnt / "steady")
            assert {dev for dev, _p in where.values()} == set(uris)
            fio = subprocess.Popen(fio_cmd(mnt, "24M", "--verify_backlog=256", "--time_based",
                                           "--runtime=10"),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                wait_for(lambda: all(int(dev_row(mnt, u)["used"]) > 2000 for u in uris),
                         20, "fio's pages on every host")
                assert fio.poll() is None, fio.stdout.read()
                h.link_down(1, drop=drop)
                # Either way the host answers nothing: given up after the timeout.
                wait_for(lambda: dev_row(mnt, gone)["down"] == "1", TIMEOUT + MARGIN,
                         "the device down")
                # fio ends (a read of a page on that host fails it), never hangs.
                out, _ = fio.communicate(timeout=30)
            finally:
                if fio.poll() is None:
                    fio.kill()
                    fio.wait()
            assert not any(m in out for m in MISMATCH), out
            failed = IO_U_ERROR.findall(out)
            if fio.returncode != 0:
                assert failed, out
            assert all(what == "read" and err == "Input/output error"
                       for _f, err, what, _o, _n in failed), out
            # The daemon lives: it answers, and says which device is down.
            r = swapfs(tmp_path, "info", "-v", str(mnt))
            states = [line.split()[-1] for line in r.stdout.splitlines()[1:4]]
            assert states == ["active", "down", "active"], r.stdout
            on_gone = int(dev_row(mnt, gone)["used"])
            # Its pages read EIO; the rest of the file written before reads back.
            for p, (dev, _devpage) in sorted(where.items())[::7]:
                if dev == gone:
                    assert_eio(pread_direct, mnt / "steady", p * PAGE, PAGE, limit=MARGIN)
                else:
                    assert pread_direct(mnt / "steady", p * PAGE, PAGE) == \
                        steady[p * PAGE:(p + 1) * PAGE]

            # swapoff of the host's device completes; what it held is lost.
            r = swapfs(tmp_path, "swapoff", str(mnt), gone, timeout=30)
            assert r.returncode == 0, r.stderr
            assert f"the device was down: {on_gone} pages are lost" in r.stderr, r.stderr
            assert read(mnt, "swapon") == f"{uris[0]}\n{uris[2]}\n"
            rows = lost_rows(mnt)
            assert {d for _o, _p, _n, d, _f in rows} == {gone}
            # fio's file too, unless it rewrote every page that host held.
            assert {f for _o, _p, _n, _d, f in rows} - {"/verify.dat"} == {"/steady"}
            assert sum(n for _o, _p, n, _d, _f in rows) == on_gone
            assert sysctls(mnt)["vm.swapfs.lost_pages"] == str(on_gone)
            assert lost_pages(mnt, Path("/steady")) == {p for p, (dev, _d) in where.items()
                                                         if dev == gone}
            # Where fio failed, it read a page that host held.
            lost = lost_pages(mnt, Path("/verify.dat"))
            for _f, _e, _w, off, n in failed:
                assert lost & set(range(int(off) // PAGE, (int(off) + int(n)) // PAGE)), \
                    (off, n, sorted(lost)[:20])
            for p in sorted(where)[::5]:
                if p not in lost_pages(mnt, Path("/steady")):
                    assert pread_direct(mnt / "steady", p * PAGE, PAGE) == \
                        steady[p * PAGE:(p + 1) * PAGE]
            # The two hosts left carry a whole fio verify run.
            r = subprocess.run(fio_cmd(mnt, "8M", name="again.dat"),
                               capture_output=True, text=True, timeout=60)
            fio_ok(r.stdout + r.stderr, r.returncode)
