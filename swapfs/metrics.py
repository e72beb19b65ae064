"""The ``sysctl`` numbers as Prometheus metrics: the ``metrics`` control file and the
HTTP endpoint of ``-o metrics=[HOST:]PORT``.

Every number of the ``sysctl`` file is one sample here, with the same value (the
table below names each); per-device numbers carry a ``device`` label, and a
device's used, free and bad pages are one family, ``swapfs_device_pages``, with a
``state`` label. Counters end in ``_total``. prometheus-client renders the text
exposition format and serves it.

No pyfuse3 here. The HTTP server answers in its own thread and takes each scrape's
numbers from the trio loop (``trio.from_thread``), where every other reader of the
pager's state runs.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Callable, Iterator, Mapping
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import trio
from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import errors

__all__ = ["METRICS", "DEVICE_METRICS", "as_number", "families", "render", "parse_address",
           "MetricsServer"]

log = logging.getLogger(__name__)

# sysctl name -> (metric family, counter?, help); help "" is the sysctl's description.
METRICS: dict[str, tuple[str, bool, str]] = {
    "vm.dmmax": ("swapfs_dmmax_pages", False, ""),
    "vm.nswapdev": ("swapfs_devices", False, ""),
    "vm.overcommit": ("swapfs_overcommit", False, ""),
    "vm.swap_async_max": ("swapfs_swap_async_max", False, ""),
    "vm.swap_maxpages": ("swapfs_maxpages", False, ""),
    "vm.swap_reserved": ("swapfs_reserved_bytes", False, ""),
    "vm.swap_total": ("swapfs_total_bytes", False, ""),
    "vm.stats.vm.v_swapin": ("swapfs_swapins", True, "Reads from swap (v_swapin)"),
    "vm.stats.vm.v_swapout": ("swapfs_swapouts", True, "Writes to swap (v_swapout)"),
    "vm.stats.vm.v_swappgsin": ("swapfs_pageins", True, "Pages read from swap (v_swappgsin)"),
    "vm.stats.vm.v_swappgsout": ("swapfs_pageouts", True,
                                 "Pages written to swap (v_swappgsout)"),
    "vm.stats.swap.free_deferred": ("swapfs_frees_deferred", True,
                                    "Frees held back until older readers finished"),
    "vm.stats.swap.free_completed": ("swapfs_frees_completed", True,
                                     "Frees handed back to the device table"),
    "vm.swapfs.bad_blocks": ("swapfs_bad_pages", False, ""),
    "vm.swapfs.checksum": ("swapfs_checksum", False, ""),
    "vm.swapfs.checksum_errors": ("swapfs_checksum_errors", True, ""),
    "vm.swapfs.scrub.checked": ("swapfs_scrub_checked_pages", False, ""),
    "vm.swapfs.scrub.errors": ("swapfs_scrub_bad_pages", False, ""),
    "vm.swapfs.scrub.rate": ("swapfs_scrub_rate_pages", False, ""),
    "vm.swapfs.scrub.state": ("swapfs_scrub_running", False,
                              "1 while a scrub runs (vm.swapfs.scrub.state)"),
    "vm.swapfs.scrub.total": ("swapfs_scrub_total_pages", False, ""),
    "vm.swapfs.debug": ("swapfs_debug", False, ""),
    "vm.swapfs.fdatasyncs": ("swapfs_fdatasyncs", True, ""),
    "vm.swapfs.objects": ("swapfs_objects", False, ""),
    "vm.swapfs.pid": ("swapfs_pid", False, ""),
    "vm.swapfs.readahead_bytes": ("swapfs_readahead_bytes", False, ""),
    "vm.swapfs.readahead_max": ("swapfs_readahead_max_bytes", False, ""),
    "vm.swapfs.reads": ("swapfs_read_requests", True, ""),
    "vm.swapfs.writes": ("swapfs_write_requests", True, ""),
    "vm.swapfs.swap_pager_avail": ("swapfs_free_pages", False, ""),
    "vm.swapfs.swap_pager_full": ("swapfs_swap_pager_full", False, ""),
    "vm.swapfs.swapoff_moved": ("swapfs_swapoff_moved_pages", False, ""),
    "vm.swapfs.swapoff_total": ("swapfs_swapoff_total_pages", False, ""),
    "vm.swapfs.hostswap.areas": ("swapfs_hostswap_areas", False, ""),
    "vm.swapfs.hostswap.active": ("swapfs_hostswap_active_areas", False, ""),
    "vm.swapfs.hostswap.locked": ("swapfs_hostswap_locked", False, ""),
    "vm.swapfs.hostswap.lock_errno": ("swapfs_hostswap_lock_errno", False, ""),
    "vm.swapfs.hostswap.oom_exempt": ("swapfs_hostswap_oom_exempt", False, ""),
    "vm.swapfs.hostswap.io_flusher": ("swapfs_io_flusher", False, ""),
    "vm.swapfs.hostswap.pageins": ("swapfs_hostswap_pageins", True, ""),
    "vm.swapfs.hostswap.pageouts": ("swapfs_hostswap_pageouts", True, ""),
}

# Sysctls that show a word: their number here.
_STATES = {"idle": 0.0, "running": 1.0}


def as_number(text: str) -> float:
    """A sysctl value as its sample's value (a state word as 0 or 1)."""
    return _STATES[text] if text in _STATES else float(text)

# vm.swapfs.dev.N.FIELD -> (family, help); used/free/bad share swapfs_device_pages.
DEVICE_METRICS: dict[str, tuple[str, str]] = {
    "npages": ("swapfs_device_size_pages", "Pages of the device"),
    "used": ("swapfs_device_pages", "Pages of the device by state: used by objects, "
             "free for writes, bad"),
    "free": ("swapfs_device_pages", ""),
    "bad": ("swapfs_device_pages", ""),
    "closing": ("swapfs_device_closing", "1 while a swapoff of the device runs"),
    "swapoff_moved": ("swapfs_device_swapoff_moved_pages",
                      "Pages the running swapoff of the device has moved"),
    "swapoff_total": ("swapfs_device_swapoff_total_pages",
                      "Pages the running swapoff of the device started with"),
    "unreadable": ("swapfs_device_unreadable_pages",
                   "Pages the last swapoff of the device could not read"),
    "faults": ("swapfs_device_faults", "Injected faults active on the device"),
    "csum_errors": ("swapfs_device_checksum_errors",
                    "Pages of the device found not to match their checksum"),
    "priority": ("swapfs_device_priority", "Allocation priority of the device"),
    "discard": ("swapfs_device_discard", "1 when freed blocks are discarded (discard=pages)"),
    "discarded": ("swapfs_device_discarded_pages",
                  "Pages given back to the device's backing store by discard"),
    "host_full": ("swapfs_device_host_full",
                  "1 while the filesystem under the device is full and writes go elsewhere"),
    "host_full_writes": ("swapfs_device_host_full_writes",
                         "Writes to the device its host filesystem refused for want of room"),
}


def families(values: Mapping[str, str], descr: Mapping[str, str]) -> list[Metric]:
    """The metric families of the ``sysctl`` values ``values`` (name -> text, as the
    file shows them); ``descr``: each global name's description."""
    out: list[Metric] = []
    for name, (metric, counter, help_) in METRICS.items():
        cls = CounterMetricFamily if counter else GaugeMetricFamily
        out.append(cls(metric, help_ or descr[name], value=as_number(values[name])))
    by_metric: dict[str, Metric] = {}
    k = 0
    while f"vm.swapfs.dev.{k}.name" in values:
        prefix = f"vm.swapfs.dev.{k}."
        device = values[prefix + "name"]
        for field, (metric, help_) in DEVICE_METRICS.items():
            fam = by_metric.get(metric)
            if fam is None:
                labels = ["device", "state"] if metric == "swapfs_device_pages" else ["device"]
                fam = by_metric[metric] = GaugeMetricFamily(metric, help_, labels=labels)
            labels = [device, field] if metric == "swapfs_device_pages" else [device]
            fam.add_metric(labels, float(values[prefix + field]))
        k += 1
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
