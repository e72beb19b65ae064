"""The NBD servers the NBD-device tests run against (tests/nbdservers.py), checked
with libnbd itself: data round trips, injected errors and delays, wrong bytes, a
stalled server, and simulated hosts that become unreachable and leave nothing behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import time

import pytest

from nbdservers import (
    ServerError, connect, hosts, leftovers, nbdkit, nbdkit_corrupting, qemu_nbd,
)

nbd = pytest.importorskip("nbd")

pytestmark = pytest.mark.skipif(shutil.which("nbdkit") is None, reason="needs nbdkit")

KIB4 = 4096


def pattern(seed: int, size: int = KIB4) -> bytes:
    return bytes((seed * 7 + i * 13) % 256 for i in range(size))


def test_nbdkit_memory_round_trip(tmp_path):
    with nbdkit(tmp_path) as server:
        assert server.uri == f"nbd+unix:///?socket={server.socket}"
        h = connect(server.uri)
        assert h.get_size() == 64 << 20
        h.pwrite(pattern(1), 8192)
        assert h.pread(KIB4, 8192) == pattern(1)
        assert h.pread(KIB4, 0) == bytes(KIB4)
        h.shutdown()
    assert not server.alive


def test_error_filter_switched_by_file(tmp_path):
    trigger = tmp_path / "fail"
    with nbdkit(tmp_path, filters=["error"],
                params=["error-pread-rate=1", f"error-pread-file={trigger}",
                        "error-pwrite=ENOSPC", "error-pwrite-rate=1",
                        f"error-pwrite-file={trigger}"]) as server:
        h = connect(server.uri)
        h.pwrite(pattern(2), 0)
        trigger.touch()
        with pytest.raises(nbd.Error) as e:
            h.pread(KIB4, 0)
        assert e.value.errnum == errno.EIO
        with pytest.raises(nbd.Error) as e:
            h.pwrite(pattern(3), 0)
        assert e.value.errnum == errno.ENOSPC
        trigger.unlink()
        assert h.pread(KIB4, 0) == pattern(2)
        h.shutdown()


def test_delay_filter_slows_reads(tmp_path):
    with nbdkit(tmp_path, filters=["delay"], params=["rdelay=300ms"]) as server:
        h = connect(server.uri)
        t0 = time.monotonic()
        h.pwrite(pattern(4), 0)
        write = time.monotonic() - t0
        t0 = time.monotonic()
        assert h.pread(KIB4, 0) == pattern(4)
        read = time.monotonic() - t0
        h.shutdown()
    assert read >= 0.3
    assert write < 0.3


def test_corrupting_server_returns_wrong_bytes(tmp_path):
    with nbdkit_corrupting(tmp_path, "1M") as server:
        h = connect(server.uri)
        assert h.get_size() == 1 << 20
        h.pwrite(pattern(5), KIB4)
        got = h.pread(KIB4, KIB4)
        assert got != pattern(5)
        assert got == bytes((b + 1) % 256 for b in pattern(5))
        assert h.pread(KIB4, 0) == b"\x01" * KIB4
        h.shutdown()
    # What was written is what the image holds.
    assert server.image.read_bytes()[KIB4:2 * KIB4] == pattern(5)


def test_corrupting_server_with_trigger(tmp_path):
    trigger = tmp_path / "corrupt"
    with nbdkit_corrupting(tmp_path, "1M", trigger=trigger) as server:
        h = connect(server.uri)
        h.pwrite(pattern(6), 0)
        assert h.pread(KIB4, 0) == pattern(6)
        trigger.touch()
        assert h.pread(KIB4, 0) != pattern(6)
        trigger.unlink()
        assert h.pread(KIB4, 0) == pattern(6)
        h.trim(KIB4, 0)
        assert h.pread(KIB4, 0) == bytes(KIB4)
        h.shutdown()


@pytest.mark.skipif(shutil.which("qemu-nbd") is None, reason="needs qemu-nbd")
def test_qemu_nbd_qcow2_round_trip(tmp_path):
    with qemu_nbd(tmp_path) as server:
        assert server.uri == f"nbd+unix:///?socket={server.socket}"
        assert server.image.suffix == ".qcow2"
        a, b = connect(server.uri), connect(server.uri)  # --shared: several at once
        assert a.get_size() == 64 << 20
        a.pwrite(pattern(7), 1 << 20)
        a.flush()
        assert b.pread(KIB4, 1 << 20) == pattern(7)
        a.shutdown()
        b.shutdown()
        c = connect(server.uri)  # --persistent: still serving after the last left
        assert c.pread(KIB4, 1 << 20) == pattern(7)
        c.shutdown()
    assert not server.alive


def test_pause_resume_stop_kill(tmp_path):
    server = nbdkit(tmp_path, "1M")
    try:
        server.pause()
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            connect(server.uri, timeout=0.3)
        assert time.monotonic() - t0 < 2
        server.resume()
        connect(server.uri).shutdown()
        server.stop()
        assert not server.alive and server.proc.returncode == 0
        server.kill()  # no-op once reaped
    finally:
        server.kill()


def test_paused_server_is_stopped(tmp_path):
    with nbdkit(tmp_path, "1M") as server:
        server.pause()
    assert not server.alive


def test_bad_start_raises_with_stderr(tmp_path):
    with pytest.raises(ServerError, match="no-such-filter"):
        nbdkit(tmp_path, filters=["no-such-filter"])


def test_tcp_on_loopback(tmp_path):
    with nbdkit(tmp_path, "1M", unix=False) as server:
        assert server.uri == f"nbd://127.0.0.1:{server.port}/"
        h = connect(server.uri)
        h.pwrite(pattern(8), 0)
        assert h.pread(KIB4, 0) == pattern(8)
        h.shutdown()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@needs_root
def test_netns_hosts(tmp_path):
    with hosts(3) as h:
        servers = [h.nbdkit(k, tmp_path, "16M") for k in range(3)]
        for k, server in enumerate(servers):
            assert server.uri == f"nbd://{h.addr(k)}:10809/"
            assert server.netns == h.netns(k)
            c = connect(server.uri)
            c.pwrite(pattern(10 + k), 0)
            assert c.pread(KIB4, 0) == pattern(10 + k)
            c.shutdown()
        assert len({h.addr(k) for k in range(3)}) == 3
        assert len(h.remaining()) == 9  # 3 namespaces, 3 links, 3 fallback routes

        # Link down: a connect fails at once rather than leaving by the default route.
        h.link_down(1)
        t0 = time.monotonic()
        with pytest.raises(nbd.Error) as e:
            connect(servers[1].uri, timeout=3)
        assert time.monotonic() - t0 < 2
        assert e.value.errnum in (errno.EHOSTUNREACH, errno.ENETUNREACH)
        connect(servers[0].uri).shutdown()
        h.link_up(1)
        c = connect(servers[1].uri, timeout=3)
        assert c.pread(KIB4, 0) == pattern(11)
        c.shutdown()

        # Dropping: the host vanishes silently, a connect hangs until its deadline.
        h.link_down(2, drop=True)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            connect(servers[2].uri, timeout=0.5)
        assert time.monotonic() - t0 < 2
        h.link_up(2)
        connect(servers[2].uri, timeout=3).shutdown()
    assert not any(s.alive for s in servers)
    assert h.remaining() == []
    # Others' (a concurrent run's) may come and go; none of these are left.
    mine = {f"{kind} {name}" for k in range(3)
            for kind, name in (("netns", h.netns(k)), ("link", h.link(k)))}
    assert not mine & set(leftovers())


@needs_root
def test_netns_hosts_clean_up_after_an_error(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with hosts(2, prefix=f"swapfs-t{os.getpid()}e") as h:
            server = h.nbdkit(0, tmp_path, "1M")
            assert any(h.netns(0) in x for x in leftovers())
            1 / 0
    assert not server.alive
    assert h.remaining() == []
    assert not {f"netns {h.netns(0)}", f"link {h.link(0)}"} & set(leftovers())


@needs_root
def test_netns_hosts_leave_others_alone(tmp_path):
    prefix = f"swapfs-t{os.getpid()}d"
    with hosts(1, prefix=prefix) as h:
        with pytest.raises(ServerError, match="netns add"):
            with hosts(1, prefix=prefix):
                pass
        assert len(h.remaining()) == 3
        server = h.nbdkit(0, tmp_path, "1M")
        connect(server.uri).shutdown()
    assert h.remaining() == []


def test_prefix_must_be_findable():
    with pytest.raises(ValueError):
        hosts(1, prefix="other")
