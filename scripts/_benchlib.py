"""What the benchmark scripts share (scripts/bench, scripts/bench-scale): the shared fio
jobs and their copies, fio's runs and figures, pyfuse3's passthroughfs, the swapoff
measurement and small process helpers. It needs swapfs, so a script imports it
through its own directory after ``_script.setup_and_reexec``:

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _script
    _script.setup_and_reexec(__file__, sys.argv[1:])   # under __main__
    import _benchlib

Progress goes to stderr through ``log``; nothing here prints to stdout.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

from swapfs.backing import parse_size
from swapfs.client import MountClient, MountProcess

MiB = 1 << 20
PAGE = 4096

# Job id -> (file name, unit, job that leaves behind the file this one uses)
JOBS = {
    "W1": ("W1-seqwrite.fio", "MiB/s", None),
    "W2": ("W2-seqread.fio", "MiB/s", "W1"),
    "W3": ("W3-randwrite.fio", "IOPS", None),
    "W4": ("W4-randread.fio", "IOPS", "W3"),
    "W5": ("W5-randrw-4jobs.fio", "IOPS", "W3"),
}

# The passthroughfs.py measured beside swapfs comes from this sdist: the version
# swapfs itself runs on.
PYFUSE3_VERSION = "3.5.0"


def log(msg: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Job files


def _set_keys(lines: list[str], keys: dict[str, str | None]) -> list[str]:
    """The job file ``lines`` with each key of ``keys`` set to its value in every job
    section (appended at the section's end where it is missing), or removed from the
    whole file where the value is None."""
    out: list[str] = []
    section = None
    missing: set[str] = set()

    def close_section() -> None:
        if section not in (None, "global"):
            # Before the blank lines and comments that end the section.
            tail = []
            while out and not out[-1].strip():
                tail.append(out.pop())
            out.extend(f"{k}={keys[k]}\n" for k in keys if k in missing)
            out.extend(reversed(tail))

    for line in lines:
        m = re.match(r"^\s*\[([^\]]+)\]", line)
        if m:
            close_section()
            section = m.group(1)
            missing = {k for k, v in keys.items() if v is not None}
            out.append(line)
            continue
        m = re.match(r"^\s*([A-Za-z_]+)\s*(=|$)", line)
        if m and m.group(1) in keys:
            key = m.group(1)
            missing.discard(key)
            if keys[key] is None:
                continue
            line = f"{key}={keys[key]}\n"
        out.append(line)
    close_section()
    return out


def job_copy(src: str, dst: str, keys: dict[str, str | None]) -> str:
    """Write a copy of the job file ``src`` to ``dst`` with ``keys`` set (a value) or
    removed (None) in its job sections; returns ``dst``.

    Options given on fio's command line do not override those in a job section (only
    [global] ones), and the shared files set size and runtime in the job sections, so a
    changed run needs changed copies.
    """
    with open(src) as f:
        lines = f.readlines()
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    with open(dst, "w") as f:
        f.writelines(_set_keys(lines, keys))
    return dst


def job_file(src_dir: str, jid: str) -> str:
    """The shared job file of ``jid``; SystemExit when it is missing."""
    src = os.path.join(src_dir, JOBS[jid][0])
    if not os.path.exists(src):
        raise SystemExit(f"bench: job file not found: {src} (use --jobs DIR)")
    return src


def job_keys(path: str) -> dict[str, str]:
    """The key=value options of a job file, the last one of each name winning."""
    keys = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^\s*([A-Za-z_]+)\s*=\s*(\S+)", line)
            if m:
                keys[m.group(1)] = m.group(2)
    return keys


def scaled_keys(path: str, scale: float) -> dict[str, str]:
    """The runtime and size of the job file ``path`` scaled by ``scale`` (at least
    1 s and 16 MiB), as ``job_copy`` keys."""
    keys = job_keys(path)
    out = {}
    if "runtime" in keys:
        out["runtime"] = str(max(1, round(int(keys["runtime"]) * scale)))
    if "size" in keys:
        out["size"] = f"{max(16, round(parse_size(keys['size']) * scale / MiB))}M"
    return out


def prepare_jobs(src_dir: str, dst_dir: str, scale: float | None,
                 only: list[str] | None = None) -> dict[str, str]:
    """Return job id -> job file for every job (or those in ``only``). With a scale,
    write copies to ``dst_dir`` with runtime and size scaled (``scaled_keys``)."""
    paths = {}
    for jid in JOBS if only is None else only:
        src = job_file(src_dir, jid)
        if scale is None:
            paths[jid] = src
            continue
        paths[jid] = job_copy(src, os.path.join(dst_dir, JOBS[jid][0]),
                              scaled_keys(src, scale))
    return paths


def job_summary(path: str) -> str:
    keys = job_keys(path)
    return " ".join(f"{k}={keys[k]}" for k in ("size", "runtime", "io_size") if k in keys)


# ---------------------------------------------------------------------------
# fio


def parse_fio_json(text: str) -> dict:
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON in fio output")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def fio_figure(jid: str, data: dict) -> float:
    """MiB/s (read and write) or IOPS (reads plus writes), as JOBS says for ``jid``,
    summed over fio's jobs; RuntimeError if one of them failed."""
    rd = wr = bw = 0.0
    for job in data["jobs"]:
        if job.get("error"):
            raise RuntimeError(f"fio job {job.get('jobname')} error {job['error']}")
        rd += job["read"]["iops"]
        wr += job["write"]["iops"]
        bw += job["read"]["bw_bytes"] + job["write"]["bw_bytes"]
    return bw / MiB if JOBS[jid][1] == "MiB/s" else rd + wr


def run_fio(jobfile: str, fiodir: str, timeout: float) -> dict:
    """``FIODIR=fiodir fio --output-format=json jobfile``: fio's JSON; RuntimeError on
    failure or timeout. fio is killed if this is interrupted."""
    env = dict(os.environ, FIODIR=fiodir)
    proc = subprocess.Popen(["fio", "--output-format=json", jobfile], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"fio timed out after {timeout:.0f} s")
    except BaseException:
        # Interrupted: no fio may keep the mount busy while it is taken down.
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"fio exit {proc.returncode}: {err.strip()[-500:]}")
    return parse_fio_json(out)


# ---------------------------------------------------------------------------
# Processes


def drop_caches(level: int = 3) -> bool:
    """As root, sync and drop the kernel's caches (1 pages, 2 dentries and inodes,
    3 both); False where that cannot be done."""
    if os.geteuid() != 0:
        return False
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write(f"{level}\n")
    except OSError as e:
        log(f"  could not drop caches: {e}")
        return False
    return True


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """CPU time of ``pid`` so far: from schedstat (nanoseconds) summed over its live
    threads where the kernel keeps it, else user plus system time from stat (clock
    ticks, threads gone included); None if there is no such process."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    # Fields 14 and 15 of stat(5), counted after the command's closing parenthesis.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tail(path: str, lines: int = 60) -> str:
    try:
        with open(path, errors="replace") as f:
            data = f.readlines()
    except OSError:
        return "(no log)"
    return "".join(data[-lines:]) or "(empty log)"


def exit_status(daemon: MountProcess) -> int | None:
    """The daemon's exit status (the negative signal number if it had to be killed);
    None if it never started."""
    return daemon.proc.returncode if daemon.proc is not None else None


def first_line(exc: BaseException) -> str:
    # MountError carries the daemon's whole log after its first line.
    return str(exc).split(":\n", 1)[0]


def dd(path: str, nbytes: int, timeout: float) -> float:
    """Write ``nbytes`` of zeros to ``path`` with dd bs=1M conv=fsync; the seconds."""
    t0 = time.monotonic()
    r = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M",
                        f"count={nbytes // MiB}", "conv=fsync"],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"dd failed: {r.stderr.strip()}")
    return time.monotonic() - t0


# ---------------------------------------------------------------------------
# Peers


def fetch_passthroughfs(work: str) -> str:
    """pyfuse3's examples/passthroughfs.py, taken from the pyfuse3 sdist that pip
    downloads, written to ``work``; its path. RuntimeError (or the error of pip, the
    file or the tarball) when it cannot be had."""
    dl = os.path.join(work, "sdist")
    os.makedirs(dl, exist_ok=True)
    log(f"fetching pyfuse3=={PYFUSE3_VERSION} source distribution for passthroughfs.py")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                        "--disable-pip-version-check", "--no-deps", "--no-binary", "pyfuse3",
                        f"pyfuse3=={PYFUSE3_VERSION}", "-d", dl],
                       capture_output=True, text=True, timeout=600)
    tars = glob.glob(os.path.join(dl, "pyfuse3-*.tar.gz"))
    if r.returncode != 0 or not tars:
        raise RuntimeError(f"pip download failed: {r.stderr.strip()[-800:]}")
    dst = os.path.join(work, "passthroughfs.py")
    with tarfile.open(tars[0]) as tf:
        member = next((m for m in tf.getmembers()
                       if m.name.endswith("/examples/passthroughfs.py")), None)
        if member is None:
            raise RuntimeError("examples/passthroughfs.py not in the sdist")
        f = tf.extractfile(member)
        assert f is not None
        with open(dst, "wb") as out:
            out.write(f.read())
    shutil.rmtree(dl, ignore_errors=True)
    return dst


# ---------------------------------------------------------------------------
# swapoff


def swapoff_rate(client: MountClient, dev0: str, dev1: str, dev_size: str, nbytes: int,
                 timeout: float, res: dict, command: bool = True) -> dict:
    """On a mount whose one device is ``dev0``: write ``nbytes`` to a new file with dd
    (bs=1M conv=fsync), swap ``dev1`` of ``dev_size`` on, and time the swapoff of
    ``dev0``: with ``command``, `swapfs swapoff` as a user runs it (the command's
    start-up included), else the one write to ``.swapfs/swapoff``, which returns once
    the pages are moved (the move alone).

    Fills ``res`` as it goes (so a failure leaves what was measured) and returns it:
    write_mib_s, write_pages_s (the dd rate), pages (on dev0 before the swapoff),
    swapoff_s, pages_s. RuntimeError when a step fails."""
    log(f"  writing {nbytes // MiB} MiB with dd (bs=1M, conv=fsync)")
    write_s = dd(os.path.join(client.path, "swapoff.dat"), nbytes, timeout)
    res["write_mib_s"] = nbytes / MiB / write_s
    res["write_pages_s"] = res["write_mib_s"] * MiB / PAGE
    try:
        client.write("swapon", f"{dev1} {dev_size}")
    except OSError as e:
        raise RuntimeError(f"swapon failed: {dev1}: {os.strerror(e.errno or 0)}") from None
    row = client.device_row(dev0)
    if row is None:
        raise RuntimeError(f"{dev0} is not on the swap table")
    pages = int(row["used"])
    log(f"  {'swapfs swapoff' if command else 'swapoff (control file)'} {dev0} "
        f"({pages} pages)")
    t0 = time.monotonic()
    if command:
        r = subprocess.run([sys.executable, "-m", "swapfs", "swapoff", client.path, dev0],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"swapoff failed: {r.stderr.strip()}")
    else:
        try:
            client.write("swapoff", dev0)
        except OSError as e:
            raise RuntimeError(f"swapoff failed: {e.strerror}") from None
    off_s = time.monotonic() - t0
    res.update(pages=pages, swapoff_s=off_s, pages_s=pages / off_s)
    return res
