"""The device-name grammar (swapfs/devspec.py), in both forms: the word form of
--device, -o device= and fstab, the line form of the swapon control file."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from swapfs import errors
from swapfs.devspec import DeviceSpec, parse_device_spec, parse_swapon_line

G, M = 1 << 30, 1 << 20
BOTH = frozenset({"once", "pages"})

WORD = [
    ("/s/x", DeviceSpec("/s/x")),
    ("/s/x:2M", DeviceSpec("/s/x", 2 * M)),
    ("/s/x:2m", DeviceSpec("/s/x", 2 * M)),
    ("/s/a:b:1G,pri=5,discard=pages", DeviceSpec("/s/a:b", G, 5, frozenset({"pages"}))),
    ("/s/x:2M:pri=-1:discard", DeviceSpec("/s/x", 2 * M, -1, BOTH)),
    ("/s/x,discard=once,pri=3", DeviceSpec("/s/x", None, 3, frozenset({"once"}))),
    ("/a:b/file", DeviceSpec("/a:b/file")),                        # ':' in a path
    ("/s/x:12Q", DeviceSpec("/s/x:12Q")),                          # no SIZE: a name
    ("/s/x:1.5G", DeviceSpec("/s/x:1.5G")),
    ("/s/pci-0000:00:1f.2-ata-1", DeviceSpec("/s/pci-0000:00:1f.2-ata-1")),
    ("/s/disk:2024", DeviceSpec("/s/disk", 2024)),                 # digits at the end
    ("/s/a b:1G", DeviceSpec("/s/a b", G)),                        # a space
    ("/s/a,b", DeviceSpec("/s/a,b")),                              # ',' before no option
    ("2G", DeviceSpec("2G")),                                      # a first word is NAME
    (":1G", DeviceSpec(":1G")),
    ("nbd://host:10809/export", DeviceSpec("nbd://host:10809/export")),
    ("nbd://host:10809/export,pri=2,discard",
     DeviceSpec("nbd://host:10809/export", None, 2, BOTH)),
    ("nbd://host/export:1G", DeviceSpec("nbd://host/export:1G")),  # ':' in a URI
    ("nbd+unix:///export?socket=/run/x.sock",
     DeviceSpec("nbd+unix:///export?socket=/run/x.sock")),
    ("nbd+unix:///export?socket=/run/x.sock,pri=1",
     DeviceSpec("nbd+unix:///export?socket=/run/x.sock", None, 1)),
]

LINE = [
    ("/s/x", DeviceSpec("/s/x")),
    ("/s/x 4M pri=7 discard=pages", DeviceSpec("/s/x", 4 * M, 7, frozenset({"pages"}))),
    ("/s/x discard", DeviceSpec("/s/x", None, 0, BOTH)),
    ("/s/x  4M   pri=1", DeviceSpec("/s/x", 4 * M, 1)),              # runs of spaces
    ("/s/new 1X", DeviceSpec("/s/new 1X")),                          # no SIZE: a name
    ("/s/my disk 2", DeviceSpec("/s/my disk", 2)),                   # digits at the end
    ("/s/my disk two", DeviceSpec("/s/my disk two")),
    ("/s/a:b:1G", DeviceSpec("/s/a:b:1G")),                          # ':' is no separator
    ("/s/x,pri=1", DeviceSpec("/s/x,pri=1")),
    ("1G", DeviceSpec("1G")),
    ("nbd://host:10809/export pri=3", DeviceSpec("nbd://host:10809/export", None, 3)),
    ("nbd+unix:///e?socket=/run/x.sock discard=once",
     DeviceSpec("nbd+unix:///e?socket=/run/x.sock", None, 0, frozenset({"once"}))),
]

BAD_WORD = ["", "/s/x,pri=99999", "/s/x,pri=one", "/s/x:discard=all", "/s/x,pri=1:2M",
            "nbd://host/export,1G"]
BAD_LINE = ["", "/s/x pri=1 4M", "/s/x 4M pri=40000", "/s/x discard=now",
            "/a pri=1/b 4M", "nbd://host/export 1G"]


@pytest.mark.parametrize("text, spec", WORD)
def test_word_form(text, spec):
    assert parse_device_spec(text) == spec


@pytest.mark.parametrize("line, spec", LINE)
def test_line_form(line, spec):
    assert parse_swapon_line(line) == spec


@pytest.mark.parametrize("text", BAD_WORD)
def test_word_form_refuses(text):
    with pytest.raises(errors.InvalidArgument):
        parse_device_spec(text)


@pytest.mark.parametrize("line", BAD_LINE)
def test_line_form_refuses(line):
    with pytest.raises(errors.InvalidArgument):
        parse_swapon_line(line)


# Names from letters that spell no option word (they could only be refused).
_SEGMENT = st.text(st.sampled_from("abz019 :,?=."), min_size=1, max_size=8)
_SIZES = st.sampled_from([None, ("4096", 4096), ("8K", 8 << 10), ("2g", 2 * G)])
_OPTIONS = st.lists(st.sampled_from(["pri=4", "pri=-1", "discard", "discard=once",
                                     "discard=pages"]), max_size=3)
_SIZE = re.compile(r"[0-9]+[KMGTkmgt]?")


def _options(words: list[str]) -> tuple[int, frozenset[str]]:
    priority, discard = 0, frozenset[str]()
    for w in words:
        if w.startswith("pri="):
            priority = int(w[4:])
        else:
            discard |= {w[8:]} if "=" in w else BOTH
    return priority, discard


def _unwritable(name: str, size_sep: str) -> bool:
    """The names rule 3 says cannot be written: one that ends in a separator and a
    SIZE, or in a space (runs of spaces are one separator)."""
    *head, last = name.split(size_sep)
    return name.endswith(" ") or bool(head and _SIZE.fullmatch(last))


@given(st.lists(_SEGMENT, min_size=1, max_size=3), _SIZES, _OPTIONS)
def test_line_form_round_trip(segments, size, options):
    name = "/" + "/".join(segments)
    assume(not _unwritable(name, " "))
    words = [name] + ([size[0]] if size else []) + options
    assert parse_swapon_line(" ".join(words)) == \
        DeviceSpec(name, size[1] if size else None, *_options(options))


@given(st.lists(_SEGMENT, min_size=1, max_size=3), _SIZES, _OPTIONS)
def test_word_form_round_trip(segments, size, options):
    name = "/" + "/".join(segments)
    assume(not _unwritable(name, ":"))
    text = name + (":" + size[0] if size else "") + "".join("," + o for o in options)
    assert parse_device_spec(text) == \
        DeviceSpec(name, size[1] if size else None, *_options(options))
