"""The ``sysctl`` numbers as Prometheus metrics: the ``metrics`` control file and the
HTTP endpoint of ``-o metrics=[HOST:]PORT``.

Every number of the ``sysctl`` file is one sample here (the tables below name
each), after Prometheus's naming guide: pages are shown as bytes, counters end in
``_total``, and the words (the daemon's pid and log) are labels of
``swapfs_daemon_info``, beside ``swapfs_build_info``. Per-device numbers carry a
``device`` label (a device's used, free and bad space are one family,
``swapfs_device_bytes``, with a ``state`` label), per-uid ones a ``uid`` label.
prometheus-client renders the text exposition format and serves it.

No pyfuse3 here. The HTTP server answers in its own thread and takes each scrape's
numbers from the trio loop (``trio.from_thread``), where every other reader of the
pager's state runs.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
from typing import Callable, Iterator, Mapping
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import trio
from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                   InfoMetricFamily, Metric)

from . import __version__, errors
from .params import PAGE_SIZE

__all__ = ["METRICS", "PAGES", "INFO", "DEVICE_METRICS", "DEVICE_PAGES", "UID_METRICS",
           "as_number", "families", "render", "parse_address", "MetricsServer"]

log = logging.getLogger(__name__)

# sysctl name -> (metric family, counter?, help); help "" is the sysctl's description.
# Names follow Prometheus's guide: amounts of storage in bytes (the sysctls in
# :data:`PAGES` are pages, scaled here), counters end in ``_total``, nothing else does.
METRICS: dict[str, tuple[str, bool, str]] = {
    "vm.dmmax": ("swapfs_cluster_max_bytes", False, "Largest cluster one write takes"),
    "vm.nswapdev": ("swapfs_devices", False, ""),
    "vm.overcommit": ("swapfs_overcommit", False, ""),
    "vm.swap_async_max": ("swapfs_swap_async_max", False, ""),
    "vm.swap_maxpages": ("swapfs_swap_max_bytes", False, "Size of every device on the "
                         "table, boot blocks and swapoffs included (vm.swap_maxpages)"),
    "vm.swap_reserved": ("swapfs_reserved_bytes", False, ""),
    "vm.swap_total": ("swapfs_swap_size_bytes", False, ""),
    "vm.stats.vm.v_swapin": ("swapfs_swapins_total", True, "Reads from swap (v_swapin)"),
    "vm.stats.vm.v_swapout": ("swapfs_swapouts_total", True, "Writes to swap (v_swapout)"),
    "vm.stats.vm.v_swappgsin": ("swapfs_pagein_bytes_total", True,
                                "Bytes read from swap (v_swappgsin, in pages)"),
    "vm.stats.vm.v_swappgsout": ("swapfs_pageout_bytes_total", True,
                                 "Bytes written to swap (v_swappgsout, in pages)"),
    "vm.stats.swap.free_deferred": ("swapfs_frees_deferred_total", True, ""),
    "vm.stats.swap.free_completed": ("swapfs_frees_completed_total", True, ""),
    "vm.swapfs.bad_blocks": ("swapfs_bad_bytes", False, ""),
    "vm.swapfs.checksum": ("swapfs_checksum_enabled", False, ""),
    "vm.swapfs.checksum_errors": ("swapfs_checksum_errors_total", True, ""),
    "vm.swapfs.scrub.checked": ("swapfs_scrub_checked_bytes", False, ""),
    "vm.swapfs.scrub.errors": ("swapfs_scrub_bad_bytes", False, ""),
    "vm.swapfs.scrub.rate": ("swapfs_scrub_max_bytes_per_second", False, ""),
    "vm.swapfs.scrub.state": ("swapfs_scrub_running", False,
                              "1 while a scrub runs (vm.swapfs.scrub.state)"),
    "vm.swapfs.scrub.total": ("swapfs_scrub_size_bytes", False, ""),
    "vm.swapfs.debug": ("swapfs_debug_enabled", False, ""),
    "vm.swapfs.fdatasyncs": ("swapfs_fdatasyncs_total", True, ""),
    "vm.swapfs.objects": ("swapfs_objects", False, ""),
    "vm.swapfs.lost_pages": ("swapfs_lost_bytes", False, "What objects lost with devices "
                             "swapped off while down (reads of it fail)"),
    "vm.swapfs.nbd_timeout": ("swapfs_nbd_timeout_seconds", False, ""),
    "vm.swapfs.readahead_bytes": ("swapfs_readahead_bytes", False, ""),
    "vm.swapfs.readahead_max": ("swapfs_readahead_max_bytes", False, ""),
    "vm.swapfs.reads": ("swapfs_read_requests_total", True, ""),
    "vm.swapfs.writes": ("swapfs_write_requests_total", True, ""),
    "vm.swapfs.swap_pager_avail": ("swapfs_free_bytes", False, ""),
    "vm.swapfs.swap_pager_full": ("swapfs_swap_pager_full", False, ""),
    "vm.swapfs.swapoff_moved": ("swapfs_swapoff_moved_bytes", False, ""),
    "vm.swapfs.swapoff_total": ("swapfs_swapoff_size_bytes", False, ""),
    "vm.swapfs.hostswap.areas": ("swapfs_hostswap_areas", False, ""),
    "vm.swapfs.hostswap.active": ("swapfs_hostswap_active_areas", False, ""),
    "vm.swapfs.hostswap.locked": ("swapfs_hostswap_memory_locked", False, ""),
    "vm.swapfs.hostswap.lock_errno": ("swapfs_hostswap_lock_errno", False, ""),
    "vm.swapfs.hostswap.oom_exempt": ("swapfs_hostswap_oom_exempt", False, ""),
    "vm.swapfs.hostswap.io_flusher": ("swapfs_io_flusher", False, ""),
    "vm.swapfs.hostswap.pageins": ("swapfs_hostswap_pagein_bytes_total", True,
                                   "Bytes the host read from its swap areas on this mount"),
    "vm.swapfs.hostswap.pageouts": ("swapfs_hostswap_pageout_bytes_total", True,
                                    "Bytes the host wrote to its swap areas on this mount"),
}
# The sysctls above counted in pages.
PAGES = frozenset({
    "vm.dmmax", "vm.swap_maxpages", "vm.stats.vm.v_swappgsin", "vm.stats.vm.v_swappgsout",
    "vm.swapfs.bad_blocks", "vm.swapfs.scrub.checked", "vm.swapfs.scrub.errors",
    "vm.swapfs.scrub.rate", "vm.swapfs.scrub.total", "vm.swapfs.swap_pager_avail",
    "vm.swapfs.swapoff_moved", "vm.swapfs.swapoff_total", "vm.swapfs.hostswap.pageins",
    "vm.swapfs.lost_pages",
    "vm.swapfs.hostswap.pageouts",
})
# Sysctls that are words, not numbers: labels of swapfs_daemon_info (which, with
# swapfs_build_info, is always 1).
INFO: dict[str, str] = {"vm.swapfs.pid": "pid", "vm.swapfs.log": "log"}

# Sysctls that show a word: their number here.
_STATES = {"idle": 0.0, "running": 1.0, "unlimited": math.inf}


def as_number(text: str) -> float:
    """A sysctl value as its sample's value (a state word as 0 or 1, unlimited as
    +Inf)."""
    return _STATES[text] if text in _STATES else float(text)


# vm.swapfs.dev.N.FIELD -> (family, counter?, help); used/free/bad share
# swapfs_device_bytes, with a state label. The fields in DEVICE_PAGES are pages.
DEVICE_METRICS: dict[str, tuple[str, bool, str]] = {
    "npages": ("swapfs_device_size_bytes", False, "Size of the device"),
    "used": ("swapfs_device_bytes", False, "Space of the device by state: used by "
             "objects, free for writes, bad"),
    "free": ("swapfs_device_bytes", False, ""),
    "bad": ("swapfs_device_bytes", False, ""),
    "closing": ("swapfs_device_closing", False, "1 while a swapoff of the device runs"),
    "swapoff_moved": ("swapfs_device_swapoff_moved_bytes", False,
                      "What the running swapoff of the device has moved"),
    "swapoff_total": ("swapfs_device_swapoff_size_bytes", False,
                      "What the running swapoff of the device started with"),
    "unreadable": ("swapfs_device_unreadable_bytes", False,
                   "What the last swapoff of the device could not read"),
    "faults": ("swapfs_device_faults", False, "Injected faults active on the device"),
    "csum_errors": ("swapfs_device_checksum_errors_total", True,
                    "Pages of the device found not to match their checksum"),
    "priority": ("swapfs_device_priority", False, "Allocation priority of the device"),
    "discard": ("swapfs_device_discard_enabled", False,
                "1 when freed blocks are discarded (discard=pages)"),
    "discarded": ("swapfs_device_discarded_bytes_total", True,
                  "Space given back to the device's backing store by discard"),
    "host_full": ("swapfs_device_host_full", False,
                  "1 while the filesystem under the device is full and writes go elsewhere"),
    "host_full_writes": ("swapfs_device_host_full_writes_total", True,
                         "Writes to the device its host filesystem refused for want of room"),
    "down": ("swapfs_device_down", False, "1 once the device answers nothing (an NBD "
             "server gone or stalled past nbd_timeout): its pages fail until swapoff"),
    "connections": ("swapfs_device_connections", False,
                    "Connections to the device's NBD server (0: not an NBD device)"),
}
DEVICE_PAGES = frozenset({"npages", "used", "free", "bad", "swapoff_moved",
                          "swapoff_total", "unreadable", "discarded"})
# vm.swapfs.uid.UID.FIELD -> (family, help, pages?): a uid label each.
UID_METRICS: dict[str, tuple[str, str, bool]] = {
    "reserved": ("swapfs_user_reserved_bytes", "Swap reserved by the uid's objects", False),
    "limit": ("swapfs_user_limit_bytes", "The uid's swap limit (+Inf: unlimited)", False),
    "swapped": ("swapfs_user_swapped_bytes", "Swap the uid's objects' pages take", True),
}
_UID_RE = re.compile(r"vm\.swapfs\.uid\.([0-9]+)\.([a-z_]+)")


def _family(metric: str, counter: bool, help_: str, labels: list[str] | None = None
            ) -> Metric:
    # prometheus-client adds "_total" to a counter's samples: the family is named without.
    if counter:
        return CounterMetricFamily(metric.removesuffix("_total"), help_, labels=labels)
    return GaugeMetricFamily(metric, help_, labels=labels)


def families(values: Mapping[str, str], descr: Mapping[str, str]) -> list[Metric]:
    """The metric families of the ``sysctl`` values ``values`` (name -> text, as the
    file shows them); ``descr``: each global name's description."""
    out: list[Metric] = [
        InfoMetricFamily("swapfs_build", "The swapfs version serving the mount",
                         value={"version": __version__}),
        InfoMetricFamily("swapfs_daemon", "The daemon's process id and log",
                         value={label: values[name] for name, label in INFO.items()}),
    ]
    for name, (metric, counter, help_) in METRICS.items():
        fam = _family(metric, counter, help_ or descr[name])
        value = as_number(values[name]) * (PAGE_SIZE if name in PAGES else 1)
        fam.add_metric([], value)
        out.append(fam)
    by_metric: dict[str, Metric] = {}
    k = 0
    while f"vm.swapfs.dev.{k}.name" in values:
        prefix = f"vm.swapfs.dev.{k}."
        device = values[prefix + "name"]
        for field, (metric, counter, help_) in DEVICE_METRICS.items():
            state = metric == "swapfs_device_bytes"
            fam = by_metric.get(metric)
            if fam is None:
                fam = by_metric[metric] = _family(
                    metric, counter, help_, ["device", "state"] if state else ["device"])
            value = float(values[prefix + field]) * (
                PAGE_SIZE if field in DEVICE_PAGES else 1)
            fam.add_metric([device, field] if state else [device], value)
        k += 1
    for name in sorted(values):
        m = _UID_RE.fullmatch(name)
        if m is None or m.group(2) not in UID_METRICS:
            continue
        metric, help_, pages = UID_METRICS[m.group(2)]
        fam = by_metric.get(metric)
        if fam is None:
            fam = by_metric[metric] = GaugeMetricFamily(metric, help_, labels=["uid"])
        fam.add_metric([m.group(1)], as_number(values[name]) * (PAGE_SIZE if pages else 1))
    return out + list(by_metric.values())


class _Fixed:
    """A collector of families computed beforehand."""

    def __init__(self, fams: Callable[[], list[Metric]]) -> None:
        self._fams = fams

    def collect(self) -> Iterator[Metric]:
        return iter(self._fams())


def _registry(fams: Callable[[], list[Metric]]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Fixed(fams))
    return reg


def render(values: Mapping[str, str], descr: Mapping[str, str]) -> str:
    """The text exposition format of ``families(values, descr)``."""
    return generate_latest(_registry(lambda: families(values, descr))).decode()


def parse_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (HOST defaults to the loopback address); InvalidArgument
    for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536 or (sep and not host):
        raise errors.InvalidArgument(f"metrics={text}: not [HOST:]PORT")
    return host, int(port)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds would fill the log


class MetricsServer:
    """An HTTP endpoint serving the metrics at any path.

    The socket is bound at construction (a busy port or a bad host raises a
    SwapfsError, before anything is mounted, and the bound socket survives the
    daemon's fork); ``start`` serves from a thread, taking each scrape's values
    (sysctl values and descriptions) from ``snapshot``, called on the trio loop of
    ``token``; ``close`` stops it.
    """

    def __init__(self, host: str, port: int,
                 snapshot: Callable[[], tuple[Mapping[str, str], Mapping[str, str]]]) -> None:
        self._snapshot = snapshot
        self._token: trio.lowlevel.TrioToken | None = None
        app = make_wsgi_app(_registry(self._families))
        try:
            self.httpd: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        except socket.gaierror as exc:  # its errno is a resolver code, not an errno
            raise errors.InvalidArgument(f"metrics={host}:{port}: {exc.strerror}") from None
        except OSError as exc:
            raise errors.from_oserror(exc, f"metrics={host}:{port}") from None
        self.address = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    def _families(self) -> list[Metric]:
        if self._token is None:
            return []
        try:
            values, descr = trio.from_thread.run_sync(self._snapshot, trio_token=self._token)
        except trio.RunFinishedError:
            return []  # unmounting
        return families(values, descr)

    def start(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics",
                                        daemon=True)
        self._thread.start()
        log.info("metrics served on http://%s:%d/metrics", *self.address)

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()
