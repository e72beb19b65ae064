"""``swapfs top``: a live view of a mount, redrawn every interval (rich's Live on the
terminal's alternate screen; ``q`` quits), or one frame as plain text (``--once``).

A frame is made of two snapshots of the control files an interval apart: rates
(page-ins and page-outs per second from ``v_swappgsin``/``v_swappgsout``, swapoff
pages per second) are their differences. It shows the totals, one line per device
(size, used, free, bad, largest free run, state: active or swapoff progress with
rate and time left) and the objects with most pages on swap, as many as fit the
terminal's height. Where the host swaps on the mount (``swapfs hostswap``), a line
gives the host's page-out and page-in rates and each area's loop device and use, and
the area's object is marked with its loop device. Everything fits 80 columns.
"""

from __future__ import annotations

import os
import re
import select
import sys
import termios
import time
import tty
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .client import MountClient
from .control import humanize_number
from .hostswap import HostArea
from .objects import ObjectRow
from .views import host_marks, mount_areas
from .params import PAGE_SIZE

__all__ = ["Snapshot", "snapshot", "frame", "run_live", "print_once"]

_LARGEST = re.compile(r"largest free range: ([0-9]+)")
# Lines of a frame besides the device and object rows: title, totals, blank,
# device header, blank, object header, and one spare for Live's cursor.
_FIXED_LINES = 7


@dataclass(frozen=True)
class Snapshot:
    """The control files' numbers at ``when`` (time.monotonic())."""

    when: float
    sysctl: dict[str, str]
    devices: list[dict[str, str]]
    largest: dict[str, int]  # device name -> largest free run (pages)
    objects: list[ObjectRow]
    areas: tuple[HostArea, ...] = ()  # the host's swap on the mount
    marks: dict[int, str] | None = None  # object id -> its host swap mark


def snapshot(client: MountClient) -> Snapshot:
    """Read sysctl, swap_fragmentation and objects now."""
    values = client.sysctl()
    largest: dict[str, int] = {}
    name = None
    for line in client.read("swap_fragmentation").splitlines():
        if line.startswith("Free space on device ") and line.endswith(":"):
            name = line[len("Free space on device "):-1]
        elif (m := _LARGEST.match(line)) and name is not None:
            largest[name] = int(m.group(1))
    objects = client.objects()
    areas = mount_areas(client)
    return Snapshot(time.monotonic(), values, client.device_rows(values), largest,
                    objects, tuple(areas), host_marks(areas, objects))


def _size(pages: int) -> str:
    return humanize_number(pages * PAGE_SIZE)


def _rate(prev: Snapshot, cur: Snapshot, name: str) -> float:
    dt = cur.when - prev.when
    return (int(cur.sysctl[name]) - int(prev.sysctl[name])) / dt if dt > 0 else 0.0


def _short(name: str, width: int) -> str:
    # The end of a path tells devices apart; keep it.
    return name if len(name) <= width else "\u2026" + name[-(width - 1):]


def _state(dev: dict[str, str], prev: Snapshot, cur: Snapshot) -> str:
    if dev.get("closing") != "1":
        if dev.get("down") == "1":
            return "down"
        return "host full" if dev.get("host_full") == "1" else "active"
    moved, total = int(dev["swapoff_moved"]), int(dev["swapoff_total"])
    before = next((d for d in prev.devices if d["name"] == dev["name"]), None)
    dt = cur.when - prev.when
    rate = (moved - int(before["swapoff_moved"])) / dt if before and dt > 0 else 0.0
    pct = 100 * moved // total if total else 100
    if rate > 0:
        left = int((total - moved) / rate)
        eta = f"{left // 60}:{left % 60:02d} left"
    else:
        eta = "-:-- left"
    return f"swapoff {pct}% {rate:.0f} p/s {eta}"


def frame(prev: Snapshot, cur: Snapshot, mnt: str, width: int = 80, height: int = 24
          ) -> Group:
    """One frame from two snapshots, ``width`` columns wide (80 or more) and at most
    ``height`` lines tall."""
    s = cur.sysctl
    total = int(s["vm.swap_total"]) // PAGE_SIZE
    free = int(s["vm.swapfs.swap_pager_avail"])
    rates = (f"  {time.strftime('%H:%M:%S')}  "
             f"page-in {_rate(prev, cur, 'vm.stats.vm.v_swappgsin'):.0f}/s  "
             f"page-out {_rate(prev, cur, 'vm.stats.vm.v_swappgsout'):.0f}/s")
    head = "swapfs top "
    title = Text(head + _short(mnt, max(12, width - len(head) - len(rates))) + rates,
                 style="bold")
    totals = Text(f"swap {_size(total)}  free {_size(free)}  "
                  f"reserved {humanize_number(int(s['vm.swap_reserved']))}  "
                  f"objects {s['vm.swapfs.objects']}  bad {s['vm.swapfs.bad_blocks']}")
    host = []
    if cur.areas:
        host.append(Text(
            f"host swap  page-out {_rate(prev, cur, 'vm.swapfs.hostswap.pageouts'):.0f}/s  "
            f"page-in {_rate(prev, cur, 'vm.swapfs.hostswap.pageins'):.0f}/s  "
            + ("memory locked" if s.get("vm.swapfs.hostswap.locked") == "1"
               else "memory NOT locked")))
        for a in cur.areas:
            use = (f"used {humanize_number(a.used or 0)} of {humanize_number(a.size)} "
                   f"prio {a.priority}" if a.active else "not swapped on")
            host.append(Text(f"  {a.loop} {_short(a.file, 36)}  {use}"))
    devs = Table(box=None, pad_edge=False, header_style="bold reverse")
    devs.add_column("DEVICE", no_wrap=True)
    for head in ("SIZE", "USED", "FREE", "BAD", "LARGEST"):
        devs.add_column(head, justify="right")
    devs.add_column("STATE", no_wrap=True)
    # The columns besides DEVICE take 60 of 80: a wider terminal shows longer names.
    name_width = max(20, width - 60)
    for d in cur.devices:
        devs.add_row(_short(d["name"], name_width), _size(int(d["npages"])),
                     _size(int(d["used"])), _size(int(d["free"])), d["bad"],
                     _size(cur.largest.get(d["name"], 0)), _state(d, prev, cur))
    room = max(1, height - _FIXED_LINES - len(cur.devices) - len(host))
    objs = Table(box=None, pad_edge=False, header_style="bold reverse")
    for head in ("ID", "SWAPPED", "SIZE", "RUNS", "RESV", "UID"):
        objs.add_column(head, justify="right")
    objs.add_column("PATH", no_wrap=True, overflow="ellipsis", max_width=36)
    top = sorted(cur.objects, key=lambda o: (-o.swapped, o.id))[:room]
    marks = cur.marks or {}
    for o in top:
        objs.add_row(str(o.id), _size(o.swapped), humanize_number(o.size), str(o.runs),
                     _size(o.resv), "-" if o.uid is None else str(o.uid),
                     # Text: a path (or the mark's brackets) is no rich markup.
                     Text(f"{o.path} {marks[o.id]}" if o.id in marks else o.path))
    return Group(title, totals, *host, Text(), devs, Text(), objs)


def print_once(client: MountClient, interval: float) -> None:
    """Print one frame as plain text, 80 columns and at most 24 lines: two snapshots
    ``interval`` seconds apart."""
    prev = snapshot(client)
    time.sleep(interval)
    cur = snapshot(client)
    console = Console(width=80, color_system=None, force_terminal=False,
                      highlight=False, emoji=False)
    with console.capture() as text:
        console.print(frame(prev, cur, os.path.abspath(client.path)))
    # Table cells are padded to their column's width: no trailing blanks in a script.
    sys.stdout.write("".join(line.rstrip() + "\n" for line in text.get().splitlines()))


def run_live(client: MountClient, interval: float) -> None:
    """Redraw a frame every ``interval`` seconds until ``q`` (or Ctrl-C)."""
    console = Console(highlight=False, emoji=False)
    fd = sys.stdin.fileno() if sys.stdin.isatty() else None
    saved = termios.tcgetattr(fd) if fd is not None else None
    prev = snapshot(client)
    try:
        if fd is not None:
            tty.setcbreak(fd)  # keys arrive one by one, unechoed
        with Live(Text(f"swapfs top {client.path}: measuring rates ..."), console=console,
                  screen=True, auto_refresh=False) as live:
            due = prev.when + interval
            while True:
                wait = max(0.0, due - time.monotonic())
                if fd is None:
                    time.sleep(wait)
                elif select.select([fd], [], [], wait)[0]:
                    if os.read(fd, 1) in (b"q", b"Q"):
                        return
                    continue
                cur = snapshot(client)
                live.update(frame(prev, cur, os.path.abspath(client.path), *console.size),
                            refresh=True)
                prev, due = cur, cur.when + interval
    except KeyboardInterrupt:
        return
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
