"""device.py: file, block and memory devices, fault injection, sizes."""

import errno
import os
import shutil
import subprocess
import sys
import time

import pytest
import trio

from swapfs import errors
from swapfs.backing import make_backing_file, parse_size
from swapfs.device import FileDevice, MemoryDevice, open_device
from swapfs.faults import Faults
from swapfs.params import PAGE_SIZE


def pattern(npages: int, seed: int) -> bytes:
    """Distinct content per page, cheap to build."""
    return b"".join(bytes([(seed + i) % 251]) * PAGE_SIZE for i in range(npages))


def backing(tmp_path, nbytes: int, name: str = "swap") -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.truncate(nbytes)
    return path


@pytest.fixture
def fdev(tmp_path):
    dev = open_device(backing(tmp_path, 16 * PAGE_SIZE))
    yield dev
    dev.close()


# ---------------------------------------------------------------- FileDevice


def test_size_rounds_down_to_pages(tmp_path):
    dev = FileDevice.open(backing(tmp_path, 10 * PAGE_SIZE + 100))
    try:
        assert dev.npages == 10
        assert not dev.is_block
        assert os.path.isabs(dev.path)
        st = os.stat(dev.path)
        assert (dev.st_dev, dev.st_ino) == (st.st_dev, st.st_ino)
        assert dev.ident == ("file", st.st_dev, st.st_ino)
    finally:
        dev.close()


def test_relative_path_is_made_absolute(tmp_path, monkeypatch):
    backing(tmp_path, 4 * PAGE_SIZE, "rel")
    monkeypatch.chdir(tmp_path)
    dev = open_device("rel")
    try:
        assert dev.path == str(tmp_path / "rel")
    finally:
        dev.close()


def test_roundtrip_multi_page(fdev):
    data = pattern(5, 7)
    fdev.write_pages(3, data)
    assert fdev.read_pages(3, 5) == data
    assert fdev.read_pages(4, 2) == data[PAGE_SIZE:3 * PAGE_SIZE]
    assert fdev.read_pages(0, 1) == bytes(PAGE_SIZE)  # untouched: sparse zeros
    fdev.write_pages(15, memoryview(pattern(1, 3)))  # last page, memoryview input
    assert fdev.read_pages(15, 1) == pattern(1, 3)
    assert fdev.read_pages(2, 0) == b""
    fdev.fsync()


def test_request_beyond_end_is_eio(fdev):
    with pytest.raises(errors.DeviceIOError) as ei:
        fdev.read_pages(15, 2)
    assert ei.value.errno == errno.EIO and ei.value.pages == (15, 2)
    with pytest.raises(errors.DeviceIOError):
        fdev.write_pages(16, pattern(1, 0))
    assert os.path.getsize(fdev.path) == 16 * PAGE_SIZE  # the file did not grow


def test_short_read_is_eio_not_zeros(tmp_path):
    path = backing(tmp_path, 8 * PAGE_SIZE)
    dev = open_device(path)
    try:
        dev.write_pages(0, pattern(8, 1))
        os.truncate(path, 5 * PAGE_SIZE + 10)  # the file shrinks under the device
        assert dev.read_pages(0, 5) == pattern(5, 1)
        with pytest.raises(errors.DeviceIOError) as ei:
            dev.read_pages(4, 3)
        assert ei.value.errno == errno.EIO
        assert ei.value.pages == (5, 2)  # page 4 was read whole; 5 and 6 were not
    finally:
        dev.close()


def test_partial_page_is_not_data(tmp_path):
    dev = open_device(backing(tmp_path, 3 * PAGE_SIZE + 100))
    try:
        with pytest.raises(errors.DeviceIOError):
            dev.read_pages(3, 1)
    finally:
        dev.close()


def test_bad_arguments(fdev):
    with pytest.raises(errors.InvalidArgument):
        fdev.write_pages(0, b"x" * 100)
    with pytest.raises(errors.InvalidArgument):
        fdev.read_pages(-1, 1)


def test_io_after_close_fails(tmp_path):
    dev = open_device(backing(tmp_path, 4 * PAGE_SIZE))
    dev.close()
    dev.close()  # idempotent
    with pytest.raises(errors.DeviceIOError) as ei:
        dev.read_pages(0, 1)
    assert ei.value.errno == errno.EBADF


def test_open_errors_keep_errno(tmp_path):
    with pytest.raises(errors.SwapfsError) as ei:
        open_device(str(tmp_path / "missing"))
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(errors.InvalidArgument) as ei:
        open_device(str(tmp_path))
    assert ei.value.errno == errno.EINVAL
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(errors.InvalidArgument):
        open_device(str(tmp_path / "fifo"))
    with pytest.raises(errors.InvalidArgument):
        open_device("/dev/null")  # a character device
    path = backing(tmp_path, 4 * PAGE_SIZE)
    with pytest.raises(errors.SwapfsError) as ei:
        open_device(path + "/below")
    assert ei.value.errno == errno.ENOTDIR
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(errors.SwapfsError) as ei:
        open_device(str(tmp_path / "loop"))
    assert ei.value.errno == errno.ELOOP


def test_open_permission_denied(tmp_path):
    path = backing(tmp_path, 4 * PAGE_SIZE)
    os.chmod(path, 0o400)
    if os.geteuid() != 0:
        with pytest.raises(errors.SwapfsError) as ei:
            open_device(path)
        assert ei.value.errno == errno.EACCES
        return
    # Root bypasses file modes: try as an unprivileged user instead.
    os.chmod(tmp_path, 0o755)
    code = ("import sys; from swapfs.device import open_device\n"
            "try:\n    open_device(sys.argv[1])\nexcept Exception as e:\n"
            "    print(type(e).__name__, e.errno)\n")
    src = os.path.dirname(os.path.dirname(os.path.abspath(errors.__file__)))
    try:
        res = subprocess.run([sys.executable, "-c", code, path], user="nobody",
                             capture_output=True, text=True, cwd="/",
                             env={"PYTHONPATH": src})
    except (KeyError, PermissionError, OSError) as exc:
        pytest.skip(f"cannot run a child as user nobody: {exc}")
    if res.returncode != 0:
        pytest.skip(f"child as nobody could not run: {res.stderr.strip()[-200:]}")
    assert res.stdout.split() == ["SwapfsError", str(errno.EACCES)]


def test_write_error_keeps_errno(fdev, monkeypatch):
    def broken(fd, data, off):
        raise OSError(errno.EROFS, "read-only")

    monkeypatch.setattr(os, "pwrite", broken)
    with pytest.raises(errors.DeviceIOError) as ei:
        fdev.write_pages(2, pattern(3, 0))
    assert ei.value.errno == errno.EROFS and ei.value.pages == (2, 3)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_full_host_is_device_full_not_an_io_error(fdev, monkeypatch, err):
    def full(fd, data, off):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(errors.DeviceFull) as ei:
        fdev.write_pages(2, pattern(3, 0))
    assert ei.value.errno == errno.ENOSPC and ei.value.pages == (2, 3)
    assert not isinstance(ei.value, errors.DeviceIOError)


def test_short_writes_continue(fdev, monkeypatch):
    real = os.pwrite
    calls = []

    def dribble(fd, data, off):  # at most 1000 bytes a call
        calls.append(off)
        return real(fd, bytes(data[:1000]), off)

    monkeypatch.setattr(os, "pwrite", dribble)
    fdev.write_pages(1, pattern(2, 9))
    monkeypatch.undo()
    assert fdev.read_pages(1, 2) == pattern(2, 9)
    assert len(calls) == -(-2 * PAGE_SIZE // 1000)


def test_failure_midway_reports_unwritten_pages(fdev, monkeypatch):
    real = os.pwrite
    state = {"n": 0}

    def fail_second(fd, data, off):
        state["n"] += 1
        if state["n"] == 2:
            raise OSError(errno.EIO, "io")
        return real(fd, bytes(data[:PAGE_SIZE + 10]), off)

    monkeypatch.setattr(os, "pwrite", fail_second)
    with pytest.raises(errors.DeviceIOError) as ei:
        fdev.write_pages(4, pattern(4, 0))
    assert ei.value.pages == (5, 3)  # page 4 is whole on disk; 5.. are not


# ------------------------------------------------------------ sizes and files


@pytest.mark.parametrize("text,value", [
    ("0", 0), ("4096", 4096), ("1k", 1024), ("1K", 1024), ("8M", 8 << 20),
    ("3G", 3 << 30), ("2T", 2 << 40), (" 16 m ", 16 << 20),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "12Q", "G", "1 G B", "0x10", "1KB"])
def test_parse_size_rejects(text):
    with pytest.raises(errors.InvalidArgument):
        parse_size(text)


def test_make_backing_file_sparse_grow_never_shrink(tmp_path):
    path = str(tmp_path / "sub" / "swap")
    with pytest.raises(errors.SwapfsError) as ei:
        make_backing_file(path, 1 << 20)
    assert ei.value.errno == errno.ENOENT
    path = str(tmp_path / "swap")
    assert make_backing_file(path, 64 << 20) == 64 << 20
    st = os.stat(path)
    assert st.st_size == 64 << 20
    assert st.st_blocks * 512 < 1 << 20  # sparse: nothing allocated
    assert oct(st.st_mode & 0o777) == oct(0o600)
    assert make_backing_file(path, 128 << 20) == 128 << 20
    assert os.path.getsize(path) == 128 << 20
    assert make_backing_file(path, 1 << 20) == 128 << 20  # never shrinks
    assert os.path.getsize(path) == 128 << 20
    with pytest.raises(errors.InvalidArgument):
        make_backing_file(str(tmp_path), 1 << 20)
    with pytest.raises(errors.InvalidArgument):
        make_backing_file(path, -1)


def test_make_backing_file_keeps_content(tmp_path):
    path = str(tmp_path / "swap")
    make_backing_file(path, 4 * PAGE_SIZE)
    dev = open_device(path)
    dev.write_pages(1, pattern(1, 5))
    dev.close()
    make_backing_file(path, 8 * PAGE_SIZE)
    dev = open_device(path)
    try:
        assert dev.npages == 8
        assert dev.read_pages(1, 1) == pattern(1, 5)
    finally:
        dev.close()


# ---------------------------------------------------------------- MemoryDevice


def test_memory_device():
    dev = MemoryDevice(8, name="m")
    assert (dev.path, dev.npages, dev.is_block) == ("m", 8, False)
    assert dev.read_pages(0, 8) == bytes(8 * PAGE_SIZE)
    dev.write_pages(2, pattern(3, 4))
    assert dev.read_pages(2, 3) == pattern(3, 4)
    with pytest.raises(errors.DeviceIOError) as ei:
        dev.read_pages(7, 2)
    assert ei.value.pages == (7, 2)
    assert MemoryDevice(1).ident != MemoryDevice(1).ident
    dev.fsync()
    dev.close()
    with pytest.raises(errors.DeviceIOError):
        dev.read_pages(0, 1)


# ---------------------------------------------------------------- faults


@pytest.fixture(params=["file", "memory"])
def anydev(request, tmp_path):
    if request.param == "file":
        dev = open_device(backing(tmp_path, 32 * PAGE_SIZE))
    else:
        dev = MemoryDevice(32)
    yield dev
    dev.close()


def test_fault_write_range(anydev):
    anydev.faults.add_write_error(10, 11)  # pages 10..20
    anydev.write_pages(0, pattern(10, 0))  # just below: fine
    anydev.write_pages(21, pattern(2, 0))  # just above: fine
    with pytest.raises(errors.DeviceIOError) as ei:
        anydev.write_pages(8, pattern(4, 0))
    assert ei.value.errno == errno.EIO
    assert ei.value.pages == (10, 2)  # the overlap, not the whole request
    assert type(ei.value) is errors.DeviceIOError
    assert anydev.read_pages(10, 2) == bytes(2 * PAGE_SIZE)  # nothing written
    assert anydev.faults.describe() == ["write-error 10-20"]
    anydev.faults.clear()
    assert anydev.faults.describe() == []
    anydev.write_pages(8, pattern(4, 0))


def test_fault_probability(anydev):
    anydev.faults.set_write_error_p(1.0)
    with pytest.raises(errors.DeviceIOError) as ei:
        anydev.write_pages(3, pattern(2, 0))
    assert ei.value.pages == (3, 2)
    anydev.read_pages(3, 2)  # reads unaffected
    anydev.faults.set_read_error_p(1.0)
    with pytest.raises(errors.DeviceIOError) as ei:
        anydev.read_pages(5, 1)
    assert ei.value.pages == (5, 1) and ei.value.errno == errno.EIO
    anydev.faults.set_write_error_p(0.0)
    anydev.write_pages(3, pattern(2, 0))


def test_fault_read_range(anydev):
    anydev.faults.add_read_error(4)
    anydev.read_pages(0, 4)
    with pytest.raises(errors.DeviceIOError) as ei:
        anydev.read_pages(2, 8)
    assert ei.value.pages == (4, 1)
    anydev.write_pages(4, pattern(1, 0))  # writes unaffected


def test_fault_latency(anydev):
    anydev.faults.set_latency(30)
    t0 = time.monotonic()
    anydev.read_pages(0, 1)
    anydev.write_pages(0, pattern(1, 0))
    assert time.monotonic() - t0 >= 0.055


def test_fault_text_roundtrip():
    f = Faults()
    for line in ["write-error 10-20", "write-error 7", "read-error p=0.01",
                 "write-error p=0.5", "latency 5"]:
        f.apply(line)
    assert f.describe() == ["write-error 10-20", "write-error 7-7", "write-error p=0.5",
                            "read-error p=0.01", "latency 5"]
    g = Faults()
    for line in f.describe():
        g.apply(line)
    assert g.describe() == f.describe()
    for bad in ["write-error", "write-error 5-3", "read-error p=2", "latency -1",
                "smash 3", "write-error x", "read-error -4"]:
        with pytest.raises(errors.InvalidArgument):
            f.apply(bad)
    assert len(f.describe()) == 5  # failed lines changed nothing
    f.apply("clear")
    assert f.describe() == []


# ---------------------------------------------------------------- async


async def test_async_wrappers(anydev):
    limiter = trio.CapacityLimiter(2)
    await anydev.awrite_pages(1, pattern(3, 2), limiter=limiter)
    assert await anydev.aread_pages(1, 3) == pattern(3, 2)
    await anydev.afsync(limiter)
    anydev.faults.add_write_error(30)
    with pytest.raises(errors.DeviceIOError) as ei:
        await anydev.awrite_pages(29, pattern(2, 0))
    assert ei.value.pages == (30, 1)


async def test_async_io_runs_off_the_loop():
    dev = MemoryDevice(4)
    dev.faults.set_latency(100)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await dev.aread_pages(0, 1)
        nursery.cancel_scope.cancel()
    assert ticks >= 3  # the loop kept running while the worker slept


# ---------------------------------------------------------------- block device


def _loop_unavailable() -> str | None:
    if shutil.which("losetup") is None:
        return "losetup(8) is not installed"
    if os.geteuid() != 0:
        return "attaching a loop device needs root"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control: loop driver missing in this kernel/container"
    return None


def test_block_device_size_from_device(tmp_path):
    reason = _loop_unavailable()
    if reason:
        pytest.skip(reason)
    img = backing(tmp_path, 3 * 1024 * 1024 + 512)  # loop rounds to 512-byte sectors
    res = subprocess.run(["losetup", "-f", "--show", img],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"losetup -f --show failed: {res.stderr.strip()}")
    loop = res.stdout.strip()
    try:
        st = os.stat(loop)
        assert st.st_size == 0  # st_size says nothing about a block device
        dev = open_device(loop)
        try:
            assert dev.is_block
            assert dev.npages == 3 * 1024 * 1024 // PAGE_SIZE  # 768, tail dropped
            assert dev.ident == ("blk", st.st_rdev)
            dev.write_pages(767, pattern(1, 6))
            assert dev.read_pages(767, 1) == pattern(1, 6)
            dev.fsync()
        finally:
            dev.close()
        with open(img, "rb") as f:
            f.seek(767 * PAGE_SIZE)
            assert f.read(PAGE_SIZE) == pattern(1, 6)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


class _Uncached(FileDevice):
    """Every read misses the page cache."""

    def read_cached(self, page, npages):
        return None


async def test_uncached_reads_on_the_loop_until_the_device_is_slow(tmp_path, monkeypatch):
    # A thread round trip costs more than a small read from a quick device, so those
    # run at once; once the device's reads average over QUICK_READ_SLOW they go to a
    # worker thread and the loop stays free.
    import threading
    fdev = _Uncached.open(backing(tmp_path, 16 * PAGE_SIZE))
    fdev.write_pages(0, pattern(4, 1))
    where: list[int] = []
    real_pread = os.pread

    def pread(fd, size, off, delay=0.0):
        where.append(threading.get_ident())
        time.sleep(delay)
        return real_pread(fd, size, off)

    monkeypatch.setattr(os, "pread", pread)
    assert await fdev.aread_pages(0, 4) == pattern(4, 1)
    assert where[-1] == threading.get_ident()
    monkeypatch.setattr(os, "pread", lambda fd, size, off: pread(fd, size, off, 0.005))
    for _ in range(3):
        assert await fdev.aread_pages(0, 4) == pattern(4, 1)
    assert where[-1] != threading.get_ident()
    fdev.close()
