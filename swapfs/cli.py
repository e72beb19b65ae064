"""The ``swapfs`` command.

::

    swapfs mount [-f] [-d] [--device PATH[:SIZE]]... [-o OPTS] MNT
    swapfs umount [-z] MNT
    swapfs mkswap PATH SIZE
    swapfs swapon MNT PATH [SIZE]
    swapfs swapoff MNT PATH
    swapfs scrub MNT [PATH]
    swapfs info MNT [-h | -k | -m | -g] [-v]
    swapfs sysctl MNT [NAME[=VALUE]]...
    swapfs faults MNT [PATH FAULT...]
    swapfs objects MNT [--sort swapped|runs|size] [-n N]
    swapfs map [MNT] FILE
    swapfs top MNT [--once] [--interval S]
    swapfs picture MNT [-o FILE.svg] [--cells N]
    swapfs hostswap on FILE SIZE [-p N] [--discard] | off FILE | [MNT]
    swapfs SOURCE MNT [-o OPTS]          (the form mount.fuse3 and fstab use)

SOURCE in the fstab form names one backing device (``PATH`` or ``PATH:SIZE``), or
is ``default``/``swapfs``/``none`` for the embedded default device; ``-o
device=PATH[:SIZE]`` adds more devices. Without any device, ``mount`` uses
``$XDG_STATE_HOME/swapfs/default.swap`` (``~/.local/state/swapfs`` when unset),
created sparse on first use with the size ``mount.DEFAULT_SIZE`` (4 GiB).

Long on purpose: each command is its argparse builder and its ``cmd_*`` function
side by side, and the builders are the one source of the usage, the man page
(manpage.py) and TAB completion (completion.py); the views it prints live in
views.py, top.py and picture.py.

swapon, swapoff, info and sysctl are clients of the control files in
``MNT/.swapfs`` (client.MountClient; README, "Control files"). A refused control
write prints the daemon's reason and the errno's name on one line, as the ``why``
file gives it: ``swapfs: swapon: /x: Device already in use (EBUSY)``.

Exit status: 0 on success, 1 with a one-line message on stderr for an expected
error, 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Sequence

from . import __version__, errors
from .client import MountClient
from .mountopts import OPTIONS
from .params import is_uri

# Words that can start a command line; anything else followed by a mountpoint is
# the mount.fuse3 form.
_GLOBAL_FLAGS = {"-h", "--help", "--version"}

# ---------------------------------------------------------------------- mount

def _mount_config(mountpoint: str, devices: list[str], opts: list[str],
                  foreground: bool, debug: bool, source: str | None = None):
    from . import mount as m

    cfg = m.MountConfig(mountpoint=mountpoint, foreground=foreground or debug,
                        debug=debug)
    if source is not None and source not in ("default", "swapfs", "none", ""):
        cfg.devices.append(m.parse_device_spec(source))
    if source:
        # As written, so /proc/mounts matches the fstab line (mount -a relies on it).
        cfg.source = source
    for d in devices:
        cfg.devices.append(m.parse_device_spec(d))
    m.apply_options(cfg, opts)
    if cfg.source is None:
        cfg.source = cfg.devices[0].path if cfg.devices else "swapfs"
    return cfg


def cmd_mount(args: argparse.Namespace) -> int:
    from . import mount as m

    cfg = _mount_config(args.mountpoint, args.device, args.o, args.foreground, args.debug)
    return m.mount(cfg)


def cmd_fstab_mount(argv: Sequence[str]) -> int:
    """``swapfs SOURCE MNT [-o OPTS]...``, as mount.fuse3 runs it."""
    from . import mount as m

    p = argparse.ArgumentParser(prog="swapfs", description="mount.fuse3 form of swapfs mount")
    p.add_argument("source")
    p.add_argument("mountpoint")
    p.add_argument("-o", action="append", default=[], metavar="OPTS")
    p.add_argument("-f", "--foreground", action="store_true")
    p.add_argument("-d", "--debug", action="store_true")
    args = p.parse_args(argv)
    cfg = _mount_config(args.mountpoint, [], args.o, args.foreground, args.debug,
                        source=args.source)
    return m.mount(cfg)


# ---------------------------------------------------------------------- umount

def cmd_umount(args: argparse.Namespace) -> int:
    from .umount import umount

    umount(args.mountpoint, lazy=args.lazy)
    return 0


# ---------------------------------------------------------------------- mkswap

def cmd_mkswap(args: argparse.Namespace) -> int:
    from .backing import make_backing_file, parse_size

    size = parse_size(args.size)
    make_backing_file(args.path, size)
    return 0


# ---------------------------------------------------------------------- control files

def _refused(exc: OSError) -> int:
    """Print a refused control write (MountClient.write's one line); exit status 1."""
    print(f"swapfs: {exc.strerror}", file=sys.stderr)
    return 1


def _device_name(name: str) -> str:
    """A device as the control files take it: a URI as given, a path made absolute."""
    return name if is_uri(name) else os.path.abspath(name)


def cmd_swapon(args: argparse.Namespace) -> int:
    path = _device_name(args.path)
    words = [path] + [w for w in (
        args.size,
        None if args.priority is None else f"pri={args.priority}",
        None if args.discard is None else "discard" + (args.discard and f"={args.discard}"),
    ) if w is not None]
    line = " ".join(words)
    try:
        MountClient(args.mountpoint).write("swapon", line)
    except OSError as exc:
        return _refused(exc)
    return 0


class _Progress:
    """swapoff's (or scrub's: ``what``, ``verb``) progress: a bar redrawn in place
    on a terminal, otherwise a plain line at most every ``plain_every`` seconds."""

    def __init__(self, path: str, stream=None, plain_every: float = 1.0,
                 what: str = "swapoff", verb: str = "moved") -> None:
        self.path = path
        self.what, self.verb = what, verb
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.plain_every = plain_every
        self.start = time.monotonic()
        self.last_plain = 0.0
        self.shown = False
        self.last: tuple[int, int] = (0, 0)

    def update(self, moved: int, total: int) -> None:
        self.last = (moved, total)
        now = time.monotonic()
        rate = moved / max(now - self.start, 1e-6)
        if self.tty:
            width = 30
            filled = width * moved // total if total else width
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r{self.what}: {self.path} [{bar}] {moved}/{total} pages "
                              f"{rate:8.0f} pages/s ")
            self.stream.flush()
            self.shown = True
        elif now - self.last_plain >= self.plain_every:
            self.last_plain = now
            self.stream.write(f"{self.what}: {self.path}: {moved} of {total} pages "
                              f"{self.verb}, {rate:.0f} pages/s\n")
            self.stream.flush()
            self.shown = True

    def done(self, ok: bool) -> None:
        total = self.last[1]
        elapsed = time.monotonic() - self.start
        if self.tty and self.shown:
            self.stream.write("\n")
        if ok:
            self.stream.write(f"{self.what}: {self.path}: {total} pages {self.verb} in "
                              f"{elapsed:.1f} s "
                              f"({total / max(elapsed, 1e-6):.0f} pages/s)\n")
        self.stream.flush()


def cmd_swapoff(args: argparse.Namespace) -> int:
    """The control write blocks until the device is gone; a thread makes it while this
    one polls the sysctls for progress. Ctrl-C stops watching only: the swapoff goes
    on in the daemon."""
    import threading

    path = _device_name(args.path)
    mnt = args.mountpoint
    client = MountClient(mnt)
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            client.write("swapoff", path)
            result.append(None)
        except BaseException as exc:  # reported by the main thread
            result.append(exc)

    progress = _Progress(path)
    lost_before = None
    try:
        # What there is to move, should the swapoff end before the first poll.
        dev = client.device_row(path)
        if dev is not None:
            progress.last = (0, int(dev["used"]))
            if dev.get("down") == "1":
                progress.verb = "given up"  # nothing can be read from it
        lost_before = int(client.sysctl().get("vm.swapfs.lost_pages", 0))
    except OSError:
        pass
    worker = threading.Thread(target=run, name="swapoff", daemon=True)
    worker.start()
    try:
        while True:
            worker.join(args.interval)
            if not worker.is_alive():
                break
            try:
                dev = client.device_row(path)
            except OSError:
                continue
            if dev is not None and dev.get("closing") == "1":
                progress.update(int(dev["swapoff_moved"]), int(dev["swapoff_total"]))
    except KeyboardInterrupt:
        if progress.tty and progress.shown:
            sys.stderr.write("\n")
        print(f"swapoff: {path}: no longer watching; the swapoff goes on in the daemon "
              f"(see: swapfs info -v {mnt})", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)  # the worker thread is still inside write(2)
    exc = result[0]
    lost = 0
    if exc is None:
        try:
            lost = int(client.sysctl().get("vm.swapfs.lost_pages", 0)) - (lost_before or 0)
        except OSError:
            pass
        if lost > 0 and progress.verb == "moved":
            # The device went down during the swapoff: what was lost was not moved.
            progress.last = (progress.last[0], max(progress.last[1] - lost, 0))
    progress.done(exc is None)
    if exc is None:
        if lost > 0:
            print(f"swapoff: {path}: the device was down: {lost} pages are lost; "
                  f"their files are listed in {os.path.join(mnt, '.swapfs', 'lost')}",
                  file=sys.stderr)
        return 0
    if isinstance(exc, OSError):
        return _refused(exc)
    raise exc


def cmd_scrub(args: argparse.Namespace) -> int:
    """Start a scrub, show its progress until it is done (Ctrl-C stops watching only),
    then the summary: pages checked and each bad page. Exit status 1 if any."""
    target = "all" if args.path is None else _device_name(args.path)
    client = MountClient(args.mountpoint)
    try:
        client.write("scrub", target)
    except OSError as exc:
        return _refused(exc)
    progress = _Progress(target, what="scrub", verb="checked")
    try:
        while True:
            values = client.sysctl()
            total = int(values["vm.swapfs.scrub.total"])
            progress.update(int(values["vm.swapfs.scrub.checked"]), total)
            if values["vm.swapfs.scrub.state"] != "running":
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print(f"\nscrub: {target}: no longer watching; the scrub goes on in the daemon "
              f"(see: swapfs sysctl {args.mountpoint} vm.swapfs.scrub)", file=sys.stderr)
        return 130
    report = client.read("scrub")
    fields = dict(line.split(": ", 1) for line in report.splitlines()
                  if not line.startswith("bad "))
    bad = [line.split(" ", 5)[1:] for line in report.splitlines() if line.startswith("bad ")]
    progress.last = (int(fields["checked"]), int(fields["checked"]))
    progress.done(True)
    paths = {row.id: row.path for row in client.objects()}
    print(f"scrub: {target}: {fields['checked']} pages checked, {len(bad)} bad")
    for obj, page, devpage, why, device in bad:
        print(f"  object {obj} ({paths.get(int(obj), 'gone')}) page {page}: {why} "
              f"at {device} page {devpage}")
    return 1 if bad else 0


_UNITS = {"k": (1 << 10, "1K-blocks"), "m": (1 << 20, "1M-blocks"), "g": (1 << 30, "1G-blocks")}


def cmd_info(args: argparse.Namespace) -> int:
    from .control import format_swapinfo
    from .views import format_host_lines, mount_areas

    client = MountClient(args.mountpoint)
    if args.linux:
        from .linuxswap import format_swapon_show, parse_proc_swaps
        sys.stdout.write(format_swapon_show(parse_proc_swaps(client.read("swaps"))))
        sys.stdout.write(format_host_lines(mount_areas(client)))
        return 0
    if args.users:
        from .views import format_users
        sys.stdout.write(format_users(client.sysctl()))
        return 0
    devs = client.device_rows()
    blocksize, header = _UNITS[args.unit or "k"]
    rows = [(d["name"], int(d["npages"]), int(d["used"]) + int(d["bad"])) for d in devs]
    extra = None
    if args.verbose:
        extra = []
        for d in devs:
            state = []
            if d.get("closing") == "1":
                state.append(f"closing {d['swapoff_moved']}/{d['swapoff_total']}")
            if d.get("down") == "1":
                state.append("down")
            if d.get("host_full") == "1":
                state.append("host full")
            if int(d.get("bad", "0")):
                state.append(f"bad {d['bad']}")
            if int(d.get("unreadable", "0")):
                state.append(f"unreadable {d['unreadable']}")
            if int(d.get("faults", "0")):
                state.append(f"faults {d['faults']}")
            extra.append(",".join(state) or "active")
    text = format_swapinfo(rows, blocksize, header, human=args.human, extra=extra)
    if args.verbose:
        head, _, rest = text.partition("\n")
        text = f"{head} State\n{rest}"
    sys.stdout.write(text)
    sys.stdout.write(format_host_lines(mount_areas(client)))
    return 0


def cmd_sysctl(args: argparse.Namespace) -> int:
    """FreeBSD sysctl(8)'s output: ``name: value``; ``name: old -> new`` on a set;
    a name that is a prefix prints everything under it."""
    status = 0
    client = MountClient(args.mountpoint)
    values = client.sysctl()
    if not args.names:
        for k in sorted(values):
            print(f"{k}: {values[k]}")
        return 0
    for arg in args.names:
        name, sep, value = arg.partition("=")
        if not sep:
            found = [k for k in sorted(values)
                     if k == name or k.startswith(name.rstrip(".") + ".")]
            if not found:
                print(f"swapfs: sysctl: unknown oid '{name}' (ENOENT)", file=sys.stderr)
                status = 1
            for k in found:
                print(f"{k}: {values[k]}")
            continue
        # A uid's limit is listed once set; before, it is unlimited.
        old = values.get(name, "unlimited" if name.startswith("vm.swapfs.uid.")
                         and name.endswith(".limit") else None)
        try:
            client.write("sysctl", f"{name}={value}")
        except OSError as exc:
            status = _refused(exc)
            continue
        values = client.sysctl()
        print(f"{name}: {old} -> {values.get(name)}")
    return status


def cmd_faults(args: argparse.Namespace) -> int:
    """Print the active faults, or write each LINE to the faults file."""
    client = MountClient(args.mountpoint)
    if not args.lines:
        sys.stdout.write(client.read("faults"))
        return 0
    for line in args.lines:
        try:
            client.write("faults", line)
        except OSError as exc:
            return _refused(exc)
    return 0


# ---------------------------------------------------------------------- views

def cmd_objects(args: argparse.Namespace) -> int:
    from .views import format_object_table, host_marks, mount_areas, sort_objects

    client = MountClient(args.mountpoint)
    rows = sort_objects(client.objects(), args.sort, args.n)
    sys.stdout.write(format_object_table(rows, host_marks(mount_areas(client), rows)))
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    from .client import mount_of
    from .views import format_map, object_of

    path = args.first if args.file is None else args.file
    client = MountClient(mount_of(path) if args.file is None else args.first)
    st, row = object_of(client, path)
    sys.stdout.write(format_map(path, st.st_size, row, client.maps()))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from . import top

    client = MountClient(args.mountpoint)
    if args.once:
        top.print_once(client, args.interval)
    else:
        top.run_live(client, args.interval)
    return 0


# ---------------------------------------------------------------------- host swap

_HOSTSWAP_USAGE = "swapfs hostswap on FILE SIZE [-p N] [--discard] | off FILE | [MNT]"


def cmd_hostswap(args: argparse.Namespace) -> int:
    from . import hostswap
    from .backing import parse_size

    words = args.words
    verb = words[0] if words and words[0] in ("on", "off") else None
    if verb != "on" and (args.priority is not None or args.discard):
        args.parser.error("-p and --discard go with hostswap on")
    if verb == "on":
        if len(words) != 3:
            args.parser.error("hostswap on takes FILE and SIZE")
        area, lacks = hostswap.on(words[1], parse_size(words[2]), args.priority,
                                  args.discard)
        print(area.loop)
        for line in lacks:
            print(f"swapfs: warning: {line}", file=sys.stderr)
        return 0
    if verb == "off":
        if len(words) != 2:
            args.parser.error("hostswap off takes FILE")
        return _hostswap_off(words[1])
    if len(words) > 1:
        args.parser.error("hostswap lists the areas of one MNT at most")
    mounts = None if not words else [os.path.realpath(MountClient(words[0]).path)]
    areas = hostswap.host_areas(mounts)
    if areas:
        sys.stdout.write(hostswap.format_areas(areas))
    return 0


def _hostswap_off(file: str) -> int:
    """swapoff with progress (pages back in memory), then the loop detached."""
    from . import hostswap
    from .params import PAGE_SIZE

    shown: dict[str, tuple[_Progress, int]] = {}

    def watch(area: "hostswap.HostArea", used: int) -> None:
        if area.loop not in shown:
            start = (area.used or used) // PAGE_SIZE
            shown[area.loop] = (_Progress(area.loop, what="hostswap off",
                                          verb="read back"), start)
        progress, start = shown[area.loop]
        progress.update(max(0, start - used // PAGE_SIZE), start)

    try:
        freed = hostswap.off(file, watch)
    except KeyboardInterrupt:
        print(f"\nswapfs: hostswap off {file}: interrupted; see swapfs hostswap for "
              f"what is left", file=sys.stderr)
        return 130
    for area in freed:
        if area.loop in shown:
            progress, start = shown[area.loop]
            progress.last = (start, start)
            progress.done(True)
        print(f"{area.loop}: off, detached from {area.file}")
    return 0


def cmd_picture(args: argparse.Namespace) -> int:
    from rich.console import Console

    from . import picture

    client = MountClient(args.mountpoint)
    console = Console(highlight=False, emoji=False)
    # Without a terminal (a pipe, a file): letters, 64 a line, at most 16 lines a device.
    plain = args.output is None and not console.is_terminal
    columns = 64 if plain else max(8, min(64, console.width))
    # Terminal: at most 8 lines (16 cell rows) a device; SVG: --cells.
    cells = args.cells if args.output else columns * 16
    pic = picture.build(client.device_rows(), client.objects(), client.maps(), cells)
    title = f"swapfs {os.path.abspath(client.path)} {time.strftime('%Y-%m-%d %H:%M:%S')}"
    if plain:
        sys.stdout.write(picture.to_text(pic, title, columns))
        return 0
    if args.output is None:
        console.print(picture.to_terminal(pic, title, columns))
        return 0
    try:
        with open(args.output, "w") as f:
            f.write(picture.to_svg(pic, title))
    except OSError as exc:
        raise errors.from_oserror(exc, args.output) from None
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"not a number of seconds in 0.05..3600: {text!r}")
    return value


# ---------------------------------------------------------------------- parser

_MNT_HELP = "a swapfs mountpoint"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand sets ``func``. Add a subcommand by
    adding a ``_add_*`` function to ``_SUBCOMMANDS``."""
    p = argparse.ArgumentParser(
        prog="swapfs", description="FreeBSD's swap pager as a FUSE filesystem.",
        epilog="fstab/mount.fuse3 form: swapfs SOURCE MNT -o OPTS")
    p.add_argument("--version", action="version", version=f"swapfs {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return p


def subcommands(parser: argparse.ArgumentParser
                ) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand of a :func:`build_parser`
    parser, in order (for the man page and completion)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    return [(name, helps[name], p) for name, p in sub.choices.items()]


def _add_mount(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mount", help="mount swapfs (in the background once live)",
                       description="Mount swapfs on MNT. Without --device, use the "
                       "default backing file in the state directory.")
    p.add_argument("mountpoint", metavar="MNT", help="the directory to mount on")
    p.add_argument("--device", action="append", default=[],
                   metavar="PATH[:SIZE][,pri=N][,discard[=once|pages]]",
                   help="backing file or block device; with SIZE (K/M/G/T) the file "
                   "is created or grown sparse first; pri=N (-1..32767, default 0) "
                   "and discard as swapon takes them (repeatable)")
    p.add_argument("-o", action="append", default=[], metavar="OPTS",
                   help="comma-separated mount options: " + ", ".join(OPTIONS)
                   + "; generic words (rw, nodev, ...) are ignored (swapfs(8): MOUNT "
                   "OPTIONS)")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground, logging to stderr")
    p.add_argument("-d", "--debug", action="store_true",
                   help="debug logging (implies --foreground)")
    p.set_defaults(func=cmd_mount)


def _add_umount(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("umount", help="unmount and wait for the daemon to exit")
    p.add_argument("mountpoint", metavar="MNT", help=_MNT_HELP)
    p.add_argument("-z", "--lazy", action="store_true", help="lazy unmount")
    p.set_defaults(func=cmd_umount)


def _add_mkswap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mkswap", help="create or grow a sparse backing file")
    p.add_argument("path", metavar="PATH", help="the file to create or grow")
    p.add_argument("size", metavar="SIZE", help="bytes, or with a K/M/G/T suffix")
    p.set_defaults(func=cmd_mkswap)


def _add_swapon(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("swapon", help="add a backing device to a mount",
                       usage="swapfs swapon [-h] [-p N] [--discard[=once|pages]] MNT PATH "
                       "[SIZE]",
                       description="Add PATH as a swap device of the swapfs mount MNT. "
                       "With SIZE (K/M/G/T) a sparse regular file is created or grown first.")
    p.add_argument("mountpoint", metavar="MNT", help=_MNT_HELP)
    p.add_argument("path", metavar="PATH", help="a regular file or block device, or an NBD "
                   "URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH)")
    p.add_argument("size", metavar="SIZE", nargs="?",
                   help="create or grow the file to this size first (K/M/G/T)")
    p.add_argument("-p", "--priority", type=int, metavar="N",
                   help="priority -1..32767 (default 0): higher is used first, equal "
                   "ones round robin")
    # A bare --discard reaches argparse as --discard= (main), so it never takes MNT.
    p.add_argument("--discard", metavar="[=once|pages]",
                   help="give space back to the backing store, once at swapon, pages "
                   "as blocks are freed; both without a value")
    p.set_defaults(func=cmd_swapon)


def _add_swapoff(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("swapoff", help="move every page off a device, then remove it",
                       description="Move every page off PATH to the other devices, then "
                       "remove it; shows progress. Ctrl-C stops watching, not the swapoff.")
    p.add_argument("mountpoint", metavar="MNT", help=_MNT_HELP)
    p.add_argument("path", metavar="PATH", help="one of the mount's devices")
    p.add_argument("--interval", type=float, default=0.2, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_swapoff)


def _add_scrub(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scrub", help="check every used page of a device against its "
                       "checksum", description="Read back every page in use on PATH "
                       "(default: every device) and check it against its checksum, while "
                       "the mount goes on working; show progress, then the pages checked "
                       "and each bad page with its object and page. Exit status 1 if any "
                       "page is bad. Ctrl-C stops watching, not the scrub.")
    p.add_argument("mountpoint", metavar="MNT", help=_MNT_HELP)
    p.add_argument("path", metavar="PATH", nargs="?", help="one of the mount's devices")
    p.add_argument("--interval", type=float, default=0.2, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_scrub)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="swapinfo(8): the devices, their size and use",
                       add_help=False,
                       description="The swapinfo(8) table of MNT's devices (1K-blocks "
                       "unless told otherwise), then a line for each host swap area on "
                       "MNT (swapfs hostswap): loop device, file, size, use, priority.")
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("mountpoint", metavar="MNT", help=_MNT_HELP)
    g = p.add_mutually_exclusive_group()
    g.add_argument("-h", dest="human", action="store_true",
                   help="Used and Avail in human units (B, K, M, G, ...)")
    g.add_argument("-k", dest="unit", action="store_const", const="k", help="1K-blocks")
    g.add_argument("-m", dest="unit", action="store_const", const="m", help="1M-blocks")
    g.add_argument("-g", dest="unit", action="store_const", const="g", help="1G-blocks")
    g.add_argument("--linux", action="store_true",
                   help="the devices as Linux's swapon --show prints them "
                   "(NAME TYPE SIZE USED PRIO)")
    g.add_argument("--users", action="store_true",
                   help="per user: swap reserved, its limit, pages on swap")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="add a State column: active, closing MOVED/TOTAL, bad N")
    p.set_defaults(func=cmd_info, unit=None)


def _add_sysctl(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sysctl", help="read or set vm.* names of a mount",
                       description="Print every name, the NAMEs given (a prefix prints "
                       "all below it), or set NAME=VALUE.")
    p.add_argument("mountpoint", metavar="MNT", help=_MNT_HELP)
    p.add_argument("names", metavar="NAME[=VALUE]", nargs="*",
                   help="a name or prefix to print, or a tunable to set")
    p.set_defaults(func=cmd_sysctl)


def _add_faults(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("faults", help="inject device faults, or list the active ones",
                       description="Without LINE, print the active faults. Each LINE is "
                       "one write to MNT/.swapfs/faults: 'PATH write-error [FIRST-LAST | "
                       "p=P]', 'PATH read-error [...]', 'PATH corrupt [...]', 'PATH "
                       "corrupt-read [...]', 'PATH sync-error [p=P]', 'PATH latency MS', "
                       "'PATH clear'.")
    p.add_argument("mountpoint", metavar="MNT", help=_MNT_HELP)
    p.add_argument("lines", metavar="LINE", nargs="*", help="a fault to inject or clear")
    p.set_defaults(func=cmd_faults)


def _add_objects(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("objects", help="the swap objects (vmstat -o), sizes humanized",
                       description="The swap objects of MNT: id, inode, size, on swap, "
                       "runs, reserved, creator uid, path; an object the host swaps on is "
                       "marked [host swap LOOP]. Other users' files are listed to root "
                       "only.")
    p.add_argument("mountpoint", metavar="MNT")
    p.add_argument("--sort", choices=sorted(_sort_keys()),
                   help="biggest first by this column (default: object id order)")
    p.add_argument("-n", type=_positive, metavar="N", help="show the first N only")
    p.set_defaults(func=cmd_objects)


def _sort_keys() -> list[str]:
    from .views import SORT_KEYS

    return list(SORT_KEYS)


def _add_map(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("map", help="a file's runs on swap, as filefrag -v prints extents",
                       usage="swapfs map [-h] [MNT] FILE",
                       description="The runs of FILE's pages on swap: logical pages, "
                       "device pages, length, device. MNT defaults to the mount FILE is on.")
    p.add_argument("first", metavar="[MNT]")
    p.add_argument("file", metavar="FILE", nargs="?")
    p.set_defaults(func=cmd_map)


def _add_top(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("top", help="a live view of devices, rates and objects (q quits)",
                       description="Redraw MNT's devices, page-in/out rates, swapoff "
                       "progress and the objects with most pages on swap every interval; "
                       "q quits.")
    p.add_argument("mountpoint", metavar="MNT")
    p.add_argument("--once", action="store_true",
                   help="print one frame as plain text (rates over one interval) and exit")
    p.add_argument("--interval", type=_interval, default=1.0, metavar="S",
                   help="seconds between frames (default 1)")
    p.set_defaults(func=cmd_top)


def _add_picture(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("picture", help="each device's blocks coloured by owner (SVG or "
                       "terminal)",
                       description="Draw every device of MNT as cells in block order, "
                       "each coloured by the object owning most of its blocks (free white, "
                       "bad black). Without -o, on the terminal.")
    p.add_argument("mountpoint", metavar="MNT")
    p.add_argument("-o", dest="output", metavar="FILE.svg", help="write an SVG file")
    p.add_argument("--cells", type=_positive, default=4096, metavar="N",
                   help="most cells a device in the SVG (default 4096)")
    p.set_defaults(func=cmd_picture)


def _add_hostswap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hostswap", help="the machine's own swap on a file of a swapfs "
                       "mount (root)", usage=_HOSTSWAP_USAGE,
                       description="on: make FILE (on a swapfs mount; created sparse with "
                       "SIZE, or reused if it is a swap area of that size) the host's "
                       "swap through a loop device with direct I/O, and print the loop "
                       "device. off: swapoff it (the kernel reads every page back in "
                       "through swapfs, with progress) and detach the loop; the file "
                       "stays. Without on or off: list the host swap areas on swapfs "
                       "mounts (on MNT only, when given): FILE, LOOP, SIZE, USED, PRIO. "
                       "on and off need root; while an area is on, swapfs umount of its "
                       "mount is refused.")
    p.add_argument("words", nargs="*", metavar="on FILE SIZE | off FILE | MNT",
                   help="what to do, as in the usage line")
    p.add_argument("-p", "--priority", type=int, metavar="N",
                   help="swap priority 0..32767 (on; default: the kernel's, below every "
                   "area given one)")
    p.add_argument("--discard", action="store_true",
                   help="let the kernel discard freed swap pages (on)")
    p.set_defaults(func=cmd_hostswap, parser=p)


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_mount, _add_umount, _add_mkswap, _add_swapon, _add_swapoff, _add_scrub, _add_info,
    _add_sysctl,
    _add_faults, _add_objects, _add_map, _add_top, _add_picture, _add_hostswap,
]


def _is_fstab_form(argv: Sequence[str]) -> bool:
    if not argv or argv[0] in _GLOBAL_FLAGS or argv[0].startswith("-"):
        return False
    commands = {add.__name__[len("_add_"):] for add in _SUBCOMMANDS}
    if argv[0] in commands:
        return False
    # SOURCE and MNT, wherever -o OPTS sits; a lone unknown word is a usage error.
    positionals, skip = 0, False
    for a in argv:
        if skip:
            skip = False
        elif a == "-o":
            skip = True
        elif not a.startswith("-"):
            positionals += 1
    return positionals >= 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``swapfs`` console script and ``python -m swapfs``."""
    if argv is None and "_ARGCOMPLETE" in os.environ:
        # The shell's TAB (argcomplete's hook): answer and exit.
        from .completion import complete
        parser = build_parser()
        complete(parser, [(name, p) for name, _help, p in subcommands(parser)])
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if _is_fstab_form(argv):
            return cmd_fstab_mount(argv)
        # Linux swapon's --discard[=POLICY]: a bare one means both policies
        # (hostswap's --discard is a plain flag).
        if argv[:1] != ["hostswap"]:
            argv = ["--discard=" if a == "--discard" else a for a in argv]
        args = build_parser().parse_args(argv)
        return args.func(args)
    except errors.SwapfsError as exc:
        print(f"swapfs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("swapfs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
