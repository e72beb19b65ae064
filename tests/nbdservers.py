"""Real NBD servers for the tests of NBD-backed devices: nbdkit (memory, error,
delay, a corrupting disk), qemu-nbd over a qcow2 image, and several simulated hosts
in network namespaces whose links can be taken down.

Every server is a child process that is reaped whatever happens: by its context
manager, by ``NetnsHosts`` for the servers it started, by an atexit hook, and by the
kernel if the test process dies (parent-death signal). That signal follows the
*thread* that started the server: start servers from the main thread or one that
outlives them (not a pool thread that may retire). ``nbd`` (libnbd's Python
module) is imported only when a server is waited for or ``connect`` is called, so
importing this module never fails; test modules that need it skip with
``pytest.importorskip("nbd")``.

No pytest fixtures here: test modules import what they need (``from nbdservers
import ...``) and make their own.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import hashlib
import ipaddress
import itertools
import os
import signal
import socket
import subprocess
import time
import weakref
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "NbdServer", "ServerError", "nbdkit", "nbdkit_corrupting", "qemu_nbd", "connect",
    "NetnsHosts", "hosts", "leftovers", "size_bytes",
    "START_TIMEOUT", "NBD_PORT", "NAME_PREFIX",
]

START_TIMEOUT = 10.0      # seconds for a server to accept its first connection
NBD_PORT = 10809          # the IANA NBD port; free inside a fresh network namespace
NAME_PREFIX = "swapfs-t"  # every namespace and link made here is named swapfs-t...

# Unix socket paths longer than this do not fit in sockaddr_un.
_SUN_PATH_MAX = 107

_seq = itertools.count()
_live: "weakref.WeakSet[NbdServer]" = weakref.WeakSet()


class ServerError(RuntimeError):
    """A server did not start (its stderr is in the message), or a namespace or link
    could not be made or removed."""


def size_bytes(size: int | str) -> int:
    """``size`` as nbdkit and qemu-img read it: an int, or digits with an optional
    K/M/G/T suffix (powers of 1024)."""
    if isinstance(size, int):
        return size
    s = size.strip().upper().removesuffix("B")
    mult = 1
    for k, suffix in enumerate("KMGT", start=1):
        if s.endswith(suffix):
            s, mult = s[:-1], 1024 ** k
            break
    return int(s) * mult


# ---------------------------------------------------------------- one server

class NbdServer:
    """One running NBD server process.

    ``uri`` is a libnbd URI for it, ``proc`` its Popen; ``socket`` (unix) or
    ``addr``/``port`` (TCP) say where it listens, ``netns`` in which namespace;
    ``image`` is its backing file where it has one. As a context manager it is
    stopped on exit; it is reaped in every case (see the module docstring).
    """

    def __init__(self, proc: subprocess.Popen, uri: str, *, log: Path,
                 socket: Path | None = None, addr: str | None = None,
                 port: int | None = None, netns: str | None = None,
                 image: Path | None = None):
        self.proc = proc
        self.uri = uri
        self.log = log
        self.socket = socket
        self.addr = addr
        self.port = port
        self.netns = netns
        self.image = image
        _live.add(self)

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self.proc.returncode}"
        return f"<NbdServer pid={self.proc.pid} {self.uri} {state}>"

    def __enter__(self) -> "NbdServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """The process has not exited (a paused server is alive)."""
        return self.proc.poll() is None

    @property
    def stderr(self) -> str:
        """What the server wrote so far (stdout and stderr)."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pause(self) -> None:
        """SIGSTOP: the server stalls. The kernel still completes TCP/unix
        handshakes into its listen backlog, but nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a paused server carries on."""
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL and reap (no-op if it already exited)."""
        if self.alive:
            self._signal(signal.SIGKILL)
        self.proc.wait()
        _live.discard(self)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; always reaped."""
        if self.alive:
            # A stopped process only acts on SIGTERM once continued.
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def _signal(self, sig: int) -> None:
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass


@atexit.register
def _reap_all() -> None:
    for server in list(_live):
        server.kill()


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # For servers without --exit-with-parent: SIGKILL when the test process dies.
    # PR_SET_PDEATHSIG survives exec (ip netns exec execs the server in place).
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def _tcp_uri(addr: str, port: int) -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return f"nbd://{host}:{port}/"


def _unix_uri(sock: Path) -> str:
    # The path "/" is the export name "", the default of both nbdkit and qemu-nbd.
    return f"nbd+unix:///?socket={sock}"


def _unix_socket(tmp_path: Path, n: int) -> Path:
    sock = Path(tmp_path) / f"nbd{n}.sock"
    if len(os.fsencode(sock)) > _SUN_PATH_MAX:
        raise ValueError(f"unix socket path too long for sockaddr_un: {sock}")
    return sock


def _free_port(addr: str) -> int:
    # Racy by nature, but only against other processes binding ephemeral ports.
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def connect(uri: str, timeout: float = 5.0):
    """A connected (ready) libnbd handle for ``uri``. Raises ``nbd.Error`` when the
    connection or handshake fails, ``TimeoutError`` when it is not done within
    ``timeout`` seconds (an unreachable or paused server); never blocks longer."""
    import nbd

    h = nbd.NBD()
    deadline = time.monotonic() + timeout
    h.aio_connect_uri(uri)
    # A handshake is a few round trips; the count bound only guards a busy loop.
    for _event in range(10_000):
        if h.aio_is_ready():
            return h
        if h.aio_is_dead() or h.aio_is_closed():
            raise nbd.Error(f"connection to {uri} died during the handshake",
                            errno.ECONNRESET)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        h.poll(max(1, int(min(left, 0.2) * 1000)))
    raise TimeoutError(f"no NBD handshake with {uri} within {timeout} s")


def _start(cmd: Sequence[str], uri: str, *, log: Path, netns: str | None,
           preexec=None, timeout: float = START_TIMEOUT, **where) -> NbdServer:
    """Run ``cmd`` (inside ``netns`` if given) and wait until ``uri`` completes an
    NBD handshake; on failure kill it and raise ServerError with its output."""
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=preexec)
    server = NbdServer(proc, uri, log=log, netns=netns, **where)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.kill()
        raise
    return server


def _wait_ready(server: NbdServer, timeout: float) -> None:
    import nbd

    deadline = time.monotonic() + timeout
    last = "nothing tried"
    for _attempt in range(int(timeout / 0.02) + 1):
        if not server.alive:
            raise ServerError(f"{' '.join(map(str, server.proc.args))} exited "
                              f"{server.proc.returncode} before serving {server.uri}:\n"
                              f"{server.stderr}")
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if server.socket is not None and not server.socket.exists():
            last = f"no socket {server.socket}"
        else:
            try:
                h = connect(server.uri, timeout=min(left, 2.0))
            except (nbd.Error, TimeoutError) as e:
                last = str(e)
            else:
                h.shutdown()
                return
        time.sleep(0.02)
    raise ServerError(f"{server.uri} not served within {timeout} s ({last}):\n"
                      f"{server.stderr}")


# ---------------------------------------------------------------- nbdkit

def nbdkit(tmp_path: Path, size: int | str | None = "64M", plugin: str = "memory",
           filters: Iterable[str] = (), params: Iterable[str] = (), *,
           unix: bool = True, addr: str | None = None, port: int | None = None,
           netns: str | None = None, extra_args: Iterable[str] = (),
           timeout: float = START_TIMEOUT) -> NbdServer:
    """``nbdkit -f`` serving ``plugin`` through ``filters`` (outermost first), ready
    for connections when this returns.

    ``params`` are the plugin's and filters' ``key=value`` arguments (the plugin's
    own positional argument, e.g. a script, goes first); ``size=SIZE`` is appended
    unless ``size`` is None (plugins without a size, such as ``file``).

    Where it listens: a unix socket in ``tmp_path`` (URI ``nbd+unix:///?socket=PATH``)
    or, with ``unix=False``, TCP ``addr:port`` (URI ``nbd://ADDR:PORT/``; ``addr``
    defaults to 127.0.0.1 and is required in a namespace, ``port`` defaults to a free
    one, or to 10809 in a namespace). ``netns`` runs it under ``ip netns exec``.

    Useful filters (see their man pages):

    - ``error``: ``error-rate=1`` (or ``error-pread-rate=1`` ...), ``error=EIO`` /
      ``error-pwrite=ENOSPC``; with ``error-file=PATH`` (or ``error-pread-file=``)
      errors happen only while PATH exists, so a test switches them on and off by
      creating and removing that file.
    - ``delay``: ``rdelay=``/``wdelay=`` (seconds or ``NNms``), ``delay-zero=``,
      ``delay-trim=``, ``delay-open=``, ``delay-close=`` ...
    - wrong bytes on reads: see ``nbdkit_corrupting``.

    Unknown filters or parameters make nbdkit exit: ServerError with its stderr.
    """
    n = next(_seq)
    tmp_path = Path(tmp_path)
    cmd = ["nbdkit", "-f", "--exit-with-parent"]
    where: dict = {}
    if unix:
        sock = _unix_socket(tmp_path, n)
        cmd += ["--unix", str(sock)]
        uri = _unix_uri(sock)
        where["socket"] = sock
    else:
        if addr is None:
            if netns is not None:
                raise ValueError("a server in a namespace needs the address to listen on")
            addr = "127.0.0.1"
        if port is None:
            port = NBD_PORT if netns is not None else _free_port(addr)
        cmd += ["--ipaddr", addr, "--port", str(port)]
        uri = _tcp_uri(addr, port)
        where.update(addr=addr, port=port)
    for f in filters:
        cmd += ["--filter", f]
    cmd += list(extra_args)
    cmd += [plugin, *params]
    if size is not None:
        cmd.append(f"size={size}")
    return _start(cmd, uri, log=tmp_path / f"nbd{n}.log", netns=netns,
                  timeout=timeout, **where)


# An nbdkit sh plugin: a disk in a sparse file whose reads come back with every
# byte plus one (mod 256), always or only while the trigger file exists. Writes,
# flush, trim and zero are honest, so the file holds what was written.
_CORRUPT_SH = r"""#!/bin/bash
export LC_ALL=C
set -o pipefail
img= trigger=
[ -r "$tmpdir/file" ] && read -r img < "$tmpdir/file"
[ -r "$tmpdir/trigger" ] && read -r trigger < "$tmpdir/trigger"
case "$1" in
  config)
    case "$2" in
      file|trigger) printf '%s\n' "$3" > "$tmpdir/$2" ;;
      *) echo "unknown parameter $2" >&2; exit 1 ;;
    esac ;;
  config_complete)
    [ -f "$img" ] || { echo "file= names no file" >&2; exit 1; } ;;
  thread_model) echo parallel ;;
  get_size) stat -L -c %s "$img" ;;
  can_write|can_flush|can_trim|can_zero|can_multi_conn) exit 0 ;;
  flush) exit 0 ;;
  pread)
    if [ -z "$trigger" ] || [ -e "$trigger" ]; then
      dd if="$img" iflag=skip_bytes,count_bytes skip="$4" count="$3" bs=64K \
         status=none | tr '\000-\377' '\001-\377\000'
    else
      dd if="$img" iflag=skip_bytes,count_bytes skip="$4" count="$3" bs=64K status=none
    fi ;;
  pwrite)
    dd of="$img" oflag=seek_bytes conv=notrunc seek="$4" \
       iflag=count_bytes,fullblock count="$3" bs=64K status=none ;;
  trim|zero)
    fallocate --punch-hole --offset "$4" --length "$3" "$img" ;;
  *) exit 2 ;;
esac
"""


def nbdkit_corrupting(tmp_path: Path, size: int | str = "64M", *,
                      trigger: Path | None = None, **kw) -> NbdServer:
    """An nbdkit server whose reads return wrong bytes: every byte read is the byte
    written plus one (mod 256), so no read of written data is ever right, and zeros
    read back as 0x01.

    nbdkit 1.32 has no filter that alters data on reads only (the evil filter came
    later; swab and cow change reads and writes alike), so this is the ``sh``
    plugin with a small bash script over a sparse file in ``tmp_path``
    (``.image``): writes, flush, trim and zero are stored faithfully, reads pass
    through ``tr``. With ``trigger`` reads are wrong only while that file exists
    (as the error filter's ``error-file=``); without, always. Each request runs a
    script (a few ms): fine for tests, not for benchmarks. ``filters``, ``unix``,
    ``netns`` ... as for ``nbdkit``.
    """
    tmp_path = Path(tmp_path)
    n = next(_seq)
    script = tmp_path / f"corrupt{n}.sh"
    script.write_text(_CORRUPT_SH)
    script.chmod(0o755)
    image = tmp_path / f"corrupt{n}.img"
    with open(image, "wb") as f:
        f.truncate(size_bytes(size))
    params = [str(script), f"file={image}"]
    if trigger is not None:
        params.append(f"trigger={trigger}")
    params += list(kw.pop("params", ()))
    server = nbdkit(tmp_path, None, "sh", params=params, **kw)
    server.image = image
    return server


# ---------------------------------------------------------------- qemu-nbd

def qemu_nbd(tmp_path: Path, size: int | str = "64M", fmt: str = "qcow2", *,
             cache: str = "writeback", discard: str = "unmap", shared: int = 0,
             netns: str | None = None, extra_args: Iterable[str] = (),
             timeout: float = START_TIMEOUT) -> NbdServer:
    """``qemu-nbd`` serving a fresh ``qemu-img create -f FMT`` image of ``size`` in
    ``tmp_path`` (``.image``) on a unix socket there, ready when this returns.

    The export name is qemu-nbd's default, the empty name, so the URI is
    ``nbd+unix:///?socket=PATH``. ``--persistent`` and ``--shared=0`` (unlimited)
    let any number of connections come and go; ``--cache=writeback`` (qemu's
    default: flush reaches the image; ``none`` would need O_DIRECT, which tmpfs
    lacks); ``--discard=unmap`` so trims punch holes.
    """
    tmp_path = Path(tmp_path)
    n = next(_seq)
    image = tmp_path / f"qemu{n}.{fmt}"
    r = subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(image), str(size)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise ServerError(f"qemu-img create failed: {r.stderr.strip()}")
    sock = _unix_socket(tmp_path, n)
    cmd = ["qemu-nbd", f"--socket={sock}", f"--format={fmt}", "--persistent",
           f"--shared={shared}", f"--cache={cache}", "--aio=threads",
           f"--discard={discard}", *extra_args, str(image)]
    # qemu-nbd has no --exit-with-parent: the parent-death signal does it.
    return _start(cmd, _unix_uri(sock), log=tmp_path / f"nbd{n}.log", netns=netns,
                  preexec=_die_with_parent, timeout=timeout, socket=sock, image=image)


# ---------------------------------------------------------------- simulated hosts

# Host k of a NetnsHosts gets a /30 of 10.213.0.0/16 (private, used by nothing else
# here): .1 on the host-side veth, .2 inside. Blocks in use on the machine (another
# test run's) are skipped, so concurrent runs do not route into each other.
_NET = ipaddress.ip_network("10.213.0.0/16")
# Behind each block's connected route lies an unreachable route with this metric:
# with the link down, packets fail at once instead of leaving by the default route.
_FALLBACK_METRIC = 4242
_ROUTE_PROTO = "213"      # marks those routes as ours in `ip route`
_PEER = "eth0"            # the veth end inside each namespace
_IP_TIMEOUT = 10.0
_ROUTE_TYPES = {"unicast", "unreachable", "blackhole", "prohibit", "throw", "local",
                "broadcast", "multicast", "nat", "anycast"}


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True,
                       timeout=_IP_TIMEOUT)
    if check and r.returncode != 0:
        raise ServerError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def _our_netns() -> list[str]:
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines()
            if line.startswith(NAME_PREFIX)]


def _our_links() -> list[str]:
    out = _ip("-o", "link", "show").stdout
    names = []
    for line in out.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        if name.startswith(NAME_PREFIX):
            names.append(name)
    return names


def _our_routes() -> list[str]:
    out = _ip("-4", "route", "show", "proto", _ROUTE_PROTO).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def leftovers() -> list[str]:
    """Every ``swapfs-t*`` network namespace and link and every fallback route of
    NetnsHosts on this machine (``"netns NAME"``, ``"link NAME"``, ``"route ..."``):
    empty when no run has any open. A fixture compares it before and after (other
    test runs on the machine show up too; ``NetnsHosts.remaining`` counts only its
    own)."""
    return ([f"netns {n}" for n in _our_netns()] + [f"link {n}" for n in _our_links()]
            + [f"route {r}" for r in _our_routes()])


def _blocks_in_use() -> set[ipaddress.IPv4Network]:
    used = set()
    for line in _ip("-o", "-4", "addr", "show").stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            iface = ipaddress.ip_interface(fields[fields.index("inet") + 1])
            used.add(ipaddress.ip_network(f"{iface.ip}/30", strict=False))
    for line in _ip("-4", "route", "show").stdout.splitlines():
        words = line.split()
        dest = words[1] if words[0] in _ROUTE_TYPES else words[0]
        try:
            net = ipaddress.ip_network(dest if "/" in dest else f"{dest}/32")
        except ValueError:
            continue
        if net.version == 4 and net.subnet_of(_NET):
            used.update(net.subnets(new_prefix=30) if net.prefixlen < 30 else
                        [ipaddress.ip_network(f"{net.network_address}/30", strict=False)])
    return used


def _free_blocks(n: int) -> list[ipaddress.IPv4Network]:
    blocks = list(_NET.subnets(new_prefix=30))
    used = _blocks_in_use()
    # Start where this pid points, so runs starting together pick different blocks.
    start = (os.getpid() * 16) % len(blocks)
    free = []
    for i in range(len(blocks)):
        block = blocks[(start + i) % len(blocks)]
        if block not in used:
            free.append(block)
            if len(free) == n:
                return free
    raise ServerError(f"no {n} free /30 blocks in {_NET}")


class NetnsHosts:
    """``n`` simulated hosts: network namespaces ``PREFIX-k`` (``swapfs-t<pid>-k`` by
    default), each joined to the root namespace by a veth pair (host side
    ``link(k)``, ``eth0`` inside) on its own /30 of 10.213.0.0/16; ``lo`` and both
    ends up. ``addr(k)`` is host k's address (reachable from the test process),
    ``nbdkit(k, ...)`` starts a server there.

    Use as a context manager: on exit (whatever happened) it kills the servers it
    started, deletes its links, namespaces and routes, and raises ServerError if any
    of them remain. Requires root. One instance per prefix at a time.
    """

    def __init__(self, n: int = 3, prefix: str | None = None):
        if prefix is None:
            prefix = f"{NAME_PREFIX}{os.getpid()}"
        if not prefix.startswith(NAME_PREFIX):
            raise ValueError(f"prefix must start with {NAME_PREFIX!r} (leftovers() "
                             "looks for that)")
        self.n = n
        self.prefix = prefix
        self.servers: list[NbdServer] = []
        self._names = [f"{prefix}-{k}" for k in range(n)]
        # Interface names have 15 characters at most: swapfs-t + 7 hex of the
        # namespace name (the link's alias is the full name, see `ip link`).
        self._links = [NAME_PREFIX + hashlib.sha1(name.encode()).hexdigest()[:7]
                       for name in self._names]
        self._blocks: list[ipaddress.IPv4Network] = []
        self._made_netns: list[str] = []
        self._made_links: list[str] = []
        self._made_routes: list[str] = []
        # Everything ever made, for remaining(): never someone else's same name.
        self._made_ever: set[str] = set()

    # -- what tests use

    def netns(self, k: int) -> str:
        """Name of host k's network namespace."""
        return self._names[k]

    def link(self, k: int) -> str:
        """Name of host k's veth end in the root namespace."""
        return self._links[k]

    def addr(self, k: int) -> str:
        """Host k's address (inside its namespace)."""
        return str(self._blocks[k].network_address + 2)

    def host_addr(self, k: int) -> str:
        """The root namespace's address on host k's link."""
        return str(self._blocks[k].network_address + 1)

    def nbdkit(self, k: int, tmp_path: Path, *args, port: int = NBD_PORT,
               **kw) -> NbdServer:
        """``nbdkit(tmp_path, *args, **kw)`` on TCP ``addr(k):port`` inside host k;
        killed on exit. Its ``uri`` is ``nbd://ADDR:PORT/``. A second server on
        the same host needs another ``port``."""
        server = nbdkit(tmp_path, *args, unix=False, addr=self.addr(k), port=port,
                        netns=self.netns(k), **kw)
        self.servers.append(server)
        return server

    def nbdkit_corrupting(self, k: int, tmp_path: Path, *args, port: int = NBD_PORT,
                          **kw) -> NbdServer:
        """``nbdkit_corrupting`` on TCP inside host k, as ``nbdkit(k, ...)``."""
        server = nbdkit_corrupting(tmp_path, *args, unix=False, addr=self.addr(k),
                                   port=port, netns=self.netns(k), **kw)
        self.servers.append(server)
        return server

    def link_down(self, k: int, drop: bool = False) -> None:
        """Host k becomes unreachable. By default the host-side veth goes down:
        connects and I/O to it fail at once (EHOSTUNREACH). With ``drop`` the end
        inside goes down instead: packets to it vanish, so connects and I/O hang
        (until TCP gives up) as with a host that died or a cut cable."""
        if drop:
            _ip("-n", self.netns(k), "link", "set", _PEER, "down")
        else:
            _ip("link", "set", self.link(k), "down")

    def link_up(self, k: int, timeout: float = 5.0) -> None:
        """Undo ``link_down(k)`` (either kind); returns once the route to host k is
        back, or raises ServerError after ``timeout`` s."""
        _ip("-n", self.netns(k), "link", "set", _PEER, "up")
        _ip("link", "set", self.link(k), "up")
        deadline = time.monotonic() + timeout
        for _attempt in range(int(timeout / 0.02) + 1):
            out = _ip("-o", "link", "show", self.link(k)).stdout
            if "LOWER_UP" in out and self.link(k) in _ip(
                    "route", "get", self.addr(k), check=False).stdout:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise ServerError(f"{self.link(k)} not back up within {timeout} s")

    # -- lifetime

    def __enter__(self) -> "NetnsHosts":
        try:
            self._blocks = _free_blocks(self.n)
            for k in range(self.n):
                self._make(k)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _make(self, k: int) -> None:
        ns, link, block = self.netns(k), self.link(k), self._blocks[k]
        _ip("netns", "add", ns)
        self._made_netns.append(ns)
        self._made_ever.add(f"netns {ns}")
        _ip("link", "add", link, "type", "veth", "peer", "name", _PEER, "netns", ns)
        self._made_links.append(link)
        self._made_ever.add(f"link {link}")
        _ip("link", "set", link, "alias", ns)
        # The fallback route before the link is up: never a moment without it.
        route = ["unreachable", str(block), "metric", str(_FALLBACK_METRIC),
                 "proto", _ROUTE_PROTO]
        _ip("route", "add", *route)
        self._made_routes.append(" ".join(route))
        self._made_ever.add(f"route {block}")
        _ip("addr", "add", f"{self.host_addr(k)}/30", "dev", link)
        _ip("-n", ns, "addr", "add", f"{self.addr(k)}/30", "dev", _PEER)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", _PEER, "up")
        _ip("link", "set", link, "up")

    def close(self) -> None:
        """Kill the servers, delete links, namespaces and routes; raise ServerError
        if anything could not be removed. Safe to call twice."""
        errors = []
        for server in self.servers:
            try:
                server.kill()
            except Exception as e:  # noqa: BLE001 - clean up the rest regardless
                errors.append(f"kill {server!r}: {e}")
        self.servers.clear()
        for link in self._made_links:
            r = _ip("link", "del", link, check=False)
            if r.returncode != 0 and "Cannot find device" not in r.stderr:
                errors.append(f"ip link del {link}: {r.stderr.strip()}")
        for ns in self._made_netns:
            r = _ip("netns", "del", ns, check=False)
            if r.returncode != 0 and "No such file" not in r.stderr:
                errors.append(f"ip netns del {ns}: {r.stderr.strip()}")
        for route in self._made_routes:
            r = _ip("route", "del", *route.split(), check=False)
            if r.returncode != 0 and "No such process" not in r.stderr:
                errors.append(f"ip route del {route}: {r.stderr.strip()}")
        # Deletion is synchronous for names, but give the kernel a moment anyway.
        left = []
        for _attempt in range(50):
            left = self.remaining()
            if not left:
                break
            time.sleep(0.05)
        self._made_links.clear()
        self._made_netns.clear()
        self._made_routes.clear()
        if left:
            errors.append(f"still there: {left}")
        if errors:
            raise ServerError("NetnsHosts cleanup: " + "; ".join(errors))

    def remaining(self) -> list[str]:
        """This instance's namespaces, links and fallback routes still on the
        machine, as ``leftovers()`` names them (other runs' are not counted)."""
        return ([f"netns {n}" for n in _our_netns() if f"netns {n}" in self._made_ever]
                + [f"link {n}" for n in _our_links() if f"link {n}" in self._made_ever]
                + [f"route {r}" for r in _our_routes()
                   if f"route {r.split()[1]}" in self._made_ever])


def hosts(n: int = 3, prefix: str | None = None) -> NetnsHosts:
    """``NetnsHosts(n, prefix)``: use as ``with hosts(3) as h: ...``."""
    return NetnsHosts(n, prefix)
