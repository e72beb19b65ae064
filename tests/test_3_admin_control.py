"""The admin's control words: swapon's pri= and discard, the swaps file (/proc/swaps),
swapon --show's table, the per-uid sysctls and the users table."""

import errno
import os

import pytest

from swapfs import errors
from swapfs.linuxswap import (
    SwapsRow,
    format_proc_swaps,
    format_swapon_show,
    parse_proc_swaps,
    size_to_human,
)
from swapfs.devspec import parse_device_spec
from swapfs.params import BBPAGES, PAGE_SIZE
from swapfs.views import format_users

from helpers import control_for, expect


async def test_swapon_words_set_priority_and_discard(tmp_path):
    c = control_for(tmp_path, 300)
    f = tmp_path / "dev1"
    await c.write("swapon", b"%s 4M pri=7 discard=pages" % bytes(f))
    sp = c.space.devices[1]
    assert (sp.priority, sp.discard_pages) == (7, True)
    values = dict(line.split(": ", 1) for line in c.read("sysctl").splitlines())
    assert values["vm.swapfs.dev.1.priority"] == "7"
    assert values["vm.swapfs.dev.1.discard"] == "1"
    # A bare discard is both: the whole file is punched at swapon.
    g = tmp_path / "dev2"
    g.write_bytes(b"\1" * (1 << 20))
    await c.write("swapon", b"%s discard" % bytes(g))
    assert os.stat(g).st_blocks == 0 and c.space.devices[2].discard_pages
    assert c.space.devices[2].priority == 0


async def test_bad_swapon_words_are_einval_and_change_nothing(tmp_path):
    c = control_for(tmp_path, 300)
    f = bytes(tmp_path / "dev1")
    for line in (b"%s 4M pri=x", b"%s 4M pri=32768", b"%s pri=-2", b"%s discard=sometimes",
                 b"%s 4M discard=", b"%s 4M pri=", b"%s pri=5 4M", b"%s discard 4M"):
        await expect(c, "swapon", line % f, errno.EINVAL, tmp_path)


def test_swaps_is_proc_swaps_byte_for_byte(tmp_path):
    c = control_for(tmp_path, 300, names=["/var/swap.img"])
    obj_pages = 5
    c.space.devices[0].used = obj_pages  # as after five pages were written
    size_kb = (300 - BBPAGES) * PAGE_SIZE // 1024
    assert c.read("swaps") == (
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        f"/var/swap.img                           file\t\t{size_kb}\t\t20\t\t0\n")
    c.space.devices[0].used = 0
    rows = [SwapsRow("/dev/loop7", True, 12_000_000, 4, -1),
            SwapsRow("/a b/swap", False, 1024, 0, 32767)]
    text = format_proc_swaps(rows)
    assert text.splitlines()[1] == "/dev/loop7                              partition\t12000000\t4\t\t-1"
    assert text.splitlines()[2].startswith("/a\\040b/swap ")
    assert parse_proc_swaps(text) == rows


def test_swapon_show_table():
    assert [size_to_human(n) for n in (0, 1023, 1024, 1536, 2 << 30, 536870912 + 262144,
                                       (1 << 30) - 1)] == \
        ["0B", "1023B", "1K", "1.5K", "2G", "512.3M", "1024M"]
    rows = [SwapsRow("/var/swap.img", False, 2 << 20, 187 * 1024 + 512, -2),
            SwapsRow("/dev/loop0", True, 1024, 0, 10)]
    assert format_swapon_show(rows) == (
        "NAME          TYPE      SIZE   USED PRIO\n"
        "/var/swap.img file        2G 187.5M   -2\n"
        "/dev/loop0    partition   1M     0B   10\n")


def test_device_spec_words():
    spec = parse_device_spec("/s/a:b:1G,pri=5,discard=pages")
    assert (spec.path, spec.size, spec.priority, spec.discard) == \
        ("/s/a:b", 1 << 30, 5, {"pages"})
    spec = parse_device_spec("/s/x:2M:pri=-1:discard")
    assert (spec.path, spec.size, spec.priority, spec.discard) == \
        ("/s/x", 2 << 20, -1, {"once", "pages"})
    with pytest.raises(errors.InvalidArgument):
        parse_device_spec("/s/x,pri=99999")


async def test_uid_limit_sysctl(tmp_path):
    c = control_for(tmp_path, 300)
    await c.write("sysctl", b"vm.swapfs.uid.1000.limit=1G")
    assert "vm.swapfs.uid.1000.limit: 1073741824\n" in c.read("sysctl")
    assert "vm.swapfs.uid.1000.reserved: 0\n" in c.read("sysctl")
    for line, err in ((b"vm.swapfs.uid.1000.limit=lots", errno.EINVAL),
                      (b"vm.swapfs.uid.1000.reserved=5", errno.EPERM),
                      (b"vm.swapfs.uid.1000.swapped=5", errno.EPERM)):
        await expect(c, "sysctl", line, err)
    obj = c.pager.alloc()
    obj.uid = 1000
    await obj.write(0, bytes(3 * PAGE_SIZE))
    values = dict(line.split(": ", 1) for line in c.read("sysctl").splitlines())
    assert values["vm.swapfs.uid.1000.reserved"] == str(3 * PAGE_SIZE)
    assert values["vm.swapfs.uid.1000.swapped"] == "3"
    table = format_users(values)
    assert table.splitlines()[0].split() == ["USER", "UID", "RESERVED", "LIMIT", "SWAPPED"]
    assert table.splitlines()[1].split()[1:] == ["1000", "12K", "1.0G", "3"]
    await c.write("sysctl", b"vm.swapfs.uid.1000.limit=unlimited")
    assert "vm.swapfs.uid.1000.limit: unlimited\n" in c.read("sysctl")
