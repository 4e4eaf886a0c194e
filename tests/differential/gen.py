#!/usr/bin/env python3
"""Differential test-data generator for wasm-sandbox's six sandbox tools.

The reference is the official `anthropic` Python SDK 2.10.0 toolset
(`anthropic.lib.tools.agent_toolset`) on CPython 3.12 with the Python walker
grep backend (no `rg` is reachable). For every case this script

1. builds the case's fixture tree (declared in this file, written out as
   `fixtures/<name>.json`) inside a private mount + pid namespace whose root is
   a fresh chroot, so the SDK sees exactly the guest paths the sandbox shows:
   `/workspace`, `/mnt/session/outputs`, `/mnt/memory/notes` (read-only store),
   `/mnt/memory/scratch` (read-write store) and `/outside` (outside all roots);
2. creates a fresh `AgentToolContext` + `beta_agent_toolset_20260401(ctx)`;
3. runs the case's calls in order through the SDK's own `SessionToolRunner`
   result path (`SessionToolRunner._call_tool`: `tool_result_content`,
   `tool_error_content`, the `TOOL_TIMEOUT` deadline, `_to_session_content`),
   with tool lookup by exact name via the SDK's `tool_registry` (an unknown
   name posts nothing: result `null`);
4. runs the tools' cleanup (`aclose_runnable_tool`), snapshots the roots
   (`tree_after`) when the case wrote anything, and writes `cases.jsonl`.

Usage: `./regen.sh` (creates the venv if needed), or with the venv's python:
`gen.py [--out DIR] [--only SUBSTR]`. See README.md for the data format.
Must run as root (uses `unshare --mount --pid`) or where unprivileged user
namespaces work (falls back to `unshare --user --map-root-user`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SDK_VERSION = "2.10.0"

WORKDIR = "/workspace"
OUTPUTS = "/mnt/session/outputs"
NOTES = "/mnt/memory/notes"
SCRATCH = "/mnt/memory/scratch"
OUTSIDE = "/outside"
ROOTS = [WORKDIR, OUTPUTS, NOTES, SCRATCH]
ALLOWED_ROOTS = [OUTPUTS, NOTES, SCRATCH]
READ_ONLY_ROOTS = [NOTES]
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/workspace", "LANG": "C.UTF-8"}
# Pause after every bash call so the event loop reaps a shell that exited
# (`exit`, syntax error); without it the reference races (see README).
BASH_SETTLE_S = 0.1
ROOT_MTIME = 1690000000
ENTRY_MTIME_BASE = 1700000000
ENTRY_MTIME_STEP = 60
CALL_KEYS = ("bash", "read", "write", "edit", "glob", "grep")

BASE_CONFIG = {
    "workdir": WORKDIR,
    "allowed_roots": ALLOWED_ROOTS,
    "read_only_roots": READ_ONLY_ROOTS,
    "outside_dir": OUTSIDE,
    "env": BASE_ENV,
    "max_file_bytes": "default (262144)",
    "max_image_base64_bytes": "default (5242880)",
    "max_pdf_bytes": "default (20971520)",
    "bash_settle_seconds_after_each_bash_call": BASH_SETTLE_S,
    "reference": f"anthropic=={SDK_VERSION} on CPython 3.12, walker grep (no rg)",
}

# --------------------------------------------------------------------------
# Fixture DSL
# --------------------------------------------------------------------------

FIXTURES: dict[str, list[dict]] = {}


def _abs(p: str) -> str:
    return p if p.startswith("/") else f"{WORKDIR}/{p}"


def F(path, text=None, *, b64=None, repeat=None, mtime=None, mode=None):
    e = {"path": _abs(path), "kind": "file"}
    if b64 is not None:
        e["content_b64"] = b64
    elif repeat is not None:
        unit, times = repeat
        e["repeat"] = {"unit": unit, "times": times}
    else:
        e["content"] = text if text is not None else ""
    if mode is not None:
        e["mode"] = mode
    if mtime is not None:
        e["mtime"] = mtime
    return e


def FB(path, data: bytes, **kw):
    return F(path, b64=base64.b64encode(data).decode("ascii"), **kw)


def D(path, *, mtime=None, mode=None):
    e = {"path": _abs(path), "kind": "dir"}
    if mode is not None:
        e["mode"] = mode
    if mtime is not None:
        e["mtime"] = mtime
    return e


def L(path, target):
    return {"path": _abs(path), "kind": "symlink", "target": target}


def FIFO(path, *, mtime=None):
    e = {"path": _abs(path), "kind": "fifo"}
    if mtime is not None:
        e["mtime"] = mtime
    return e


def H(path, target):
    return {"path": _abs(path), "kind": "hardlink", "target": _abs(target)}


def fixture(name: str, entries: list[dict]) -> None:
    """Register a fixture: prepend the roots and /outside, add missing parent
    dirs, and give every file/dir/fifo a distinct explicit mtime (glob sorts by
    mtime; distinct values keep the expected order filesystem-independent)."""
    base = [D(r, mtime=ROOT_MTIME) for r in ROOTS] + [
        D(OUTSIDE, mtime=ROOT_MTIME),
        F(f"{OUTSIDE}/secret.txt", "TOP SECRET: outside the roots\n", mtime=ROOT_MTIME),
    ]
    out: list[dict] = []
    seen: set[str] = set()
    n = 0

    def add(e: dict) -> None:
        nonlocal n
        parent = os.path.dirname(e["path"])
        if parent not in seen and parent != "/" and parent not in ("/mnt", "/mnt/session", "/mnt/memory"):
            add(D(parent))
        if e["path"] in seen:
            raise SystemExit(f"fixture {name}: duplicate entry {e['path']}")
        seen.add(e["path"])
        if e["kind"] in ("file", "dir", "fifo") and "mtime" not in e:
            n += 1
            e["mtime"] = ENTRY_MTIME_BASE + n * ENTRY_MTIME_STEP
        out.append(e)

    for e in base + entries:
        add(dict(e))
    FIXTURES[name] = out


PNG_1x1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
GIF_1x1 = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
JPEG_STUB = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
WEBP_STUB = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
PDF_STUB = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"

LONG_NAME = "n" * 300 + ".txt"

BASIC = [
        F("hello.txt", "hello world\n"),
        F("lines.txt", "line1\nline2\nline3\nline4\nline5\n"),
        F("noeol.txt", "a\nb\nc"),
        F("crlf.txt", "one\r\ntwo\r\nthree\r\n"),
        F("bom.txt", "\ufeffbom text\nsecond\n"),
        F("empty.txt", ""),
        F("nul.txt", "a\x00b\nc\n"),
        F("unicode.txt", "héllo ✓ 名前\n🎉 emoji\n"),
        F("repeat.txt", "foo bar foo baz foo\n"),
        F("aaaa.txt", "aaaa"),
        F("abc.txt", "abc"),
        F("dollar.txt", "price: 10\n"),
        F("multi.txt", "alpha\nbeta\ngamma\n"),
        F("script.sh", "#!/bin/sh\necho hi\n", mode=0o755),
        FB("binary.bin", b"\xff\xfe\x00\x01binary"),
        FB("latin1.txt", b"caf\xe9\n"),
        D("dir"),
        F("dir/nested.txt", "nested\n"),
        D("dir/sub"),
        F("dir/sub/deep.txt", "deep\n"),
        D("emptydir"),
        F(".hidden", "dot file\n"),
        F(".config/settings.json", '{"a": 1}\n'),
        F("notes.png", "not really a png\n"),
        FB("img.png", PNG_1x1),
        FB("photo.JPG", JPEG_STUB),
        FB("pic.jpeg", JPEG_STUB),
        FB("anim.gif", GIF_1x1),
        FB("pic.webp", WEBP_STUB),
        FB("doc.pdf", PDF_STUB),
        FB("DOC.PDF", PDF_STUB),
        F("image.png.txt", "text with png in name\n"),
        FIFO("fifo"),
        H("hard.txt", "hello.txt"),
        L("link_in", "hello.txt"),
        L("link_in_abs", "/workspace/hello.txt"),
        L("link_dir", "dir"),
        L("link_out_abs", "/outside/secret.txt"),
        L("link_out_rel", "../outside/secret.txt"),
        L("link_etc", "/etc/passwd"),
        L("link_dir_out", "/outside"),
        L("link_dir_out_rel", "../outside"),
        L("dangling_in", "missing_target.txt"),
        L("dangling_in_dir", "newdir/child.txt"),
        L("dangling_out", "/outside/nope.txt"),
        L("loop_a", "loop_b"),
        L("loop_b", "loop_a"),
        L("self_loop", "self_loop"),
        L("link_to_outputs", "/mnt/session/outputs"),
        L("link_to_notes", "/mnt/memory/notes/policy.md"),
        L("link_to_scratch", "/mnt/memory/scratch"),
        L("link_root", "/"),
        L("chain1", "chain2"),
        L("chain2", "chain3"),
        L("chain3", "chain4"),
        L("chain4", "chain5"),
        L("chain5", "hello.txt"),
        L("dir/up_link", "../hello.txt"),
        L("dir/escape_link", "../../outside/secret.txt"),
        F("it's.txt", "apostrophe\n"),
        F('say "hi".txt', "double quotes\n"),
        F("tab\tname.txt", "tab in name\n"),
        F("space name.txt", "space in name\n"),
        F("caf\u00e9.txt", "nfc name\n"),
        F("re\u0301sume\u0301.txt", "nfd name\n"),
        F("-dash.txt", "leading dash\n"),
        F(f"{OUTPUTS}/report.md", "# Report\nstatus: draft\n"),
        F(f"{NOTES}/policy.md", "Policy: be nice.\n"),
        F(f"{NOTES}/sub/x.md", "nested note\n"),
        F(f"{SCRATCH}/todo.md", "- [ ] task one\n- [ ] task two\n"),
        F(f"{OUTSIDE}/other.txt", "also outside\n"),
]
fixture("basic", BASIC)

fixture("empty", [])


def subset(name: str, source: list[dict], keep: set[str]) -> None:
    """A smaller fixture made of the named entries of a source entry list
    (paths relative to /workspace or absolute); keeps tree_after small."""
    picked = [dict(e) for e in source if e["path"] in {_abs(k) for k in keep}]
    for e in picked:
        e.pop("mtime", None)
    missing = {_abs(k) for k in keep} - {e["path"] for e in picked}
    if missing:
        raise SystemExit(f"subset {name}: unknown entries {sorted(missing)}")
    fixture(name, picked)


_STORE_FILES = {f"{OUTPUTS}/report.md", f"{NOTES}/policy.md", f"{SCRATCH}/todo.md"}
subset("small", BASIC, {"hello.txt", "lines.txt", "dir/nested.txt", "dir/sub/deep.txt"} | _STORE_FILES)
subset(
    "writes",
    BASIC,
    {
        "hello.txt", "script.sh", "hard.txt", "dir/nested.txt", "dir/sub/deep.txt", "link_in", "link_dir",
        "dangling_in", "dangling_in_dir", "dangling_out", "link_out_abs", "link_out_rel", "link_dir_out",
        "dir/escape_link", "loop_a", "loop_b", "link_to_outputs", "link_to_scratch", "link_to_notes", "caf\u00e9.txt",
    }
    | _STORE_FILES,
)
subset(
    "edits",
    BASIC,
    {
        "hello.txt", "repeat.txt", "aaaa.txt", "abc.txt", "dollar.txt", "multi.txt", "crlf.txt", "unicode.txt",
        "bom.txt", "nul.txt", "binary.bin", "latin1.txt", "img.png", "notes.png", "empty.txt", "dir/nested.txt",
        "fifo", "hard.txt", "link_in", "link_out_abs", "link_out_rel", "dangling_in", "loop_a", "loop_b",
        "link_to_notes", "it's.txt",
    }
    | _STORE_FILES,
)

fixture(
    "big",
    [
        F("big.txt", repeat=("abcdefghijklmno\n", 16385)),  # 262160 bytes
        F("exact.txt", repeat=("0123456789abcde\n", 16384)),  # 262144 bytes
        F("longline.txt", repeat=("x", 300000)),
        F("manylines.txt", repeat=("L\n", 200000)),  # 400000 bytes
        F("big.png", repeat=("A", 3932161)),
        F("big.pdf", repeat=("A", 20971521)),
        F("c20.txt", "0123456789012345678\n"),
        F("c21.txt", "01234567890123456789\n"),
        F("img75.png", repeat=("P", 75)),
        F("img76.png", repeat=("P", 76)),
        F("pdf100.pdf", repeat=("D", 100)),
        F("ten.txt", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n"),
    ],
)

_glob_entries = [
    F("a.txt", "a\n"),
    F("b.txt", "b\n"),
    F("c.md", "c\n"),
    F("Upper.TXT", "upper\n"),
    F("space name.txt", "s\n"),
    F("[brackets].txt", "br\n"),
    F(".dotfile", "dot\n"),
    F(".dotdir/x.txt", "x\n"),
    F("src/main.rs", "fn main() {}\n"),
    F("src/lib.rs", "pub fn f() {}\n"),
    F("src/util/helpers.rs", "// helpers\n"),
    F("src/util/mod.rs", "mod helpers;\n"),
    F("docs/README.md", "# docs\n"),
    F("docs/guide.md", "guide\n"),
    F("node_modules/pkg/index.js", "x\n"),
    F(".git/HEAD", "ref: refs/heads/main\n"),
    F(".git/config", "[core]\n"),
    D("empty_dir"),
    L("link_src", "src"),
    L("link_out", "/outside"),
    L("link_file", "a.txt"),
    L("dangling", "nope.txt"),
    L("loop", "loop"),
    F("z_newest.txt", "newest\n", mtime=1800000000),
    F("z_oldest.txt", "oldest\n", mtime=1600000000),
    F(f"{NOTES}/n1.md", "n1\n"),
    F(f"{NOTES}/n2.md", "n2\n"),
    F(f"{OUTPUTS}/out/o1.txt", "o1\n"),
    F(f"{SCRATCH}/s.txt", "s\n"),
]
fixture("globtree", _glob_entries)
fixture("globmany", [F("a.txt", "a\n")] + [F(f"many/f{i:03d}.txt", f"{i}\n") for i in range(250)])

fixture(
    "greptree",
    [
        F("src/app.py", "import os\n\ndef main():\n    print('hello needle')\n    return 0\n"),
        F("src/util.py", "def helper(x):\n    return x * 2  # needle\n"),
        F("src/data.json", '{"key": "value", "needle": true}\n'),
        F("docs/readme.md", "# Title\nSome needle here.\nNEEDLE upper\n"),
        F(".hidden.txt", "hidden needle\n"),
        F(".git/config", "[core]\n\tneedle = 1\n"),
        F("node_modules/pkg/index.js", "module.exports = 'needle';\n"),
        L("link_file", "src/util.py"),
        L("link_dir", "docs"),
        L("link_out", "/outside"),
        L("link_loop", "link_loop"),
        FB("nul_head.bin", b"needle\x00binary\n"),
        F("nul_late.txt", "a" * 600 + "\nneedle\x00late\n"),
        F("long.txt", "needle " + "y" * 1993 + "\nneedle short\nneedle " + "y" * 1992 + "\n"),
        F("crlf.txt", "needle crlf\r\nother\r\n"),
        FB("latin1.txt", b"caf\xe9 needle\n"),
        F("unicode.txt", "名前 needle ✓\nnaïve\n"),
        F("big.txt", repeat=("haystack line for truncation\n", 4000)),
        F("empty.txt", ""),
        FIFO("fifo"),
        F(
            "regex.txt",
            "foo123bar\nabc\naaa\nfoo bar\nx.y\nxzy\n(paren)\n[bracket]\nback\\slash\ntab\there\n"
            "Word word WORD\n\nend$\ncafé\n",
        ),
        F("deep/a/b/c/d.txt", "deep needle\n"),
        F(f"{NOTES}/policy.md", "needle policy\n"),
        F(f"{SCRATCH}/todo.md", "needle todo\n"),
    ],
)

# --------------------------------------------------------------------------
# Case DSL
# --------------------------------------------------------------------------

CASES: list[dict] = []
DEVIATIONS: list[dict] = []
_counters: dict[str, int] = {}


def C(name: str, **inp) -> dict:
    return {"name": name, "input": inp}


def CR(name: str, inp: dict) -> dict:
    """A call with a raw input dict (keys that are not Python identifiers)."""
    return {"name": name, "input": inp}


def case(tool, slug, fixture_name, calls, *, config=None, tree=None, deviation=None):
    if isinstance(calls, dict):
        calls = [calls]
    _counters[tool] = _counters.get(tool, 0) + 1
    cid = f"{tool}-{_counters[tool]:03d}-{slug}"
    if tree is None:
        tree = any(c["name"] in ("write", "edit", "bash") for c in calls)
    c = {"id": cid, "tool": tool, "fixture": fixture_name, "config": config or {}, "calls": calls, "_tree": tree}
    if deviation:
        c["note"] = deviation
        DEVIATIONS.append(c)
    else:
        CASES.append(c)


def B(command=None, **kw) -> dict:
    inp = {} if command is None else {"command": command}
    inp.update(kw)
    return {"name": "bash", "input": inp}


# ----------------------------- read ---------------------------------------

R = lambda fp, **kw: C("read", file_path=fp, **kw)  # noqa: E731

for slug, fp in [
    ("basic", "hello.txt"),
    ("absolute", "/workspace/hello.txt"),
    ("dot-prefix", "./hello.txt"),
    ("dotdot-inside", "dir/../hello.txt"),
    ("trailing-slash", "hello.txt/"),
    ("double-slash", "dir//nested.txt"),
    ("nested", "dir/nested.txt"),
    ("deep", "dir/sub/deep.txt"),
    ("no-eol", "noeol.txt"),
    ("crlf", "crlf.txt"),
    ("bom", "bom.txt"),
    ("empty-file", "empty.txt"),
    ("nul-bytes", "nul.txt"),
    ("unicode", "unicode.txt"),
    ("invalid-utf8-binary", "binary.bin"),
    ("invalid-utf8-latin1", "latin1.txt"),
    ("missing", "missing.txt"),
    ("missing-dir", "nodir/file.txt"),
    ("file-as-dir", "hello.txt/extra"),
    ("directory", "dir"),
    ("dot", "."),
    ("empty-path", ""),
    ("workdir-abs", "/workspace"),
    ("fifo", "fifo"),
    ("dev-null", "/dev/null"),
    ("dotdot-outside", "../outside/secret.txt"),
    ("abs-outside", "/outside/secret.txt"),
    ("etc-passwd", "/etc/passwd"),
    ("many-dotdots", "../../../../etc/passwd"),
    ("dotdot-collapses-inside", "../workspace/hello.txt"),
    ("root", "/"),
    ("link-inside", "link_in"),
    ("link-inside-abs", "link_in_abs"),
    ("link-out-abs", "link_out_abs"),
    ("link-out-rel", "link_out_rel"),
    ("link-etc", "link_etc"),
    ("link-dir-out-intermediate", "link_dir_out/secret.txt"),
    ("link-dir-out-rel-intermediate", "link_dir_out_rel/secret.txt"),
    ("link-dir-inside", "link_dir/nested.txt"),
    ("link-in-subdir-up", "dir/up_link"),
    ("link-in-subdir-escape", "dir/escape_link"),
    ("dangling-in", "dangling_in"),
    ("dangling-out", "dangling_out"),
    ("loop", "loop_a"),
    ("self-loop", "self_loop"),
    ("loop-intermediate", "loop_a/x.txt"),
    ("chain-5", "chain1"),
    ("link-root-intermediate", "link_root/etc/passwd"),
    ("hardlink", "hard.txt"),
    ("outputs-abs", "/mnt/session/outputs/report.md"),
    ("notes-readonly-read", "/mnt/memory/notes/policy.md"),
    ("notes-nested", "/mnt/memory/notes/sub/x.md"),
    ("scratch", "/mnt/memory/scratch/todo.md"),
    ("memory-parent-outside", "/mnt/memory"),
    ("memory-sibling-escape", "/mnt/memory/notes/../scratch/todo.md"),
    ("memory-unknown-store", "/mnt/memory/other/x.md"),
    ("session-parent", "/mnt/session/uploads/f.txt"),
    ("link-to-outputs", "link_to_outputs/report.md"),
    ("link-to-notes", "link_to_notes"),
    ("apostrophe-name", "it's.txt"),
    ("double-quote-name", 'say "hi".txt'),
    ("tab-name", "tab\tname.txt"),
    ("space-name", "space name.txt"),
    ("nfc-name", "caf\u00e9.txt"),
    ("nfc-spelling-of-nfd-file", "r\u00e9sum\u00e9.txt"),
    ("nfd-spelling-of-nfc-file", "cafe\u0301.txt"),
    ("nfd-name", "re\u0301sume\u0301.txt"),
    ("dash-name", "-dash.txt"),
    ("missing-with-apostrophe-outside", "../it's/x"),
    ("missing-outside-tab", "/outside/\tx"),
    ("missing-outside-unicode", "/outside/名前"),
    ("nul-in-path", "hello.txt\u0000"),
    ("long-name", LONG_NAME),
    ("tilde-no-expansion", "~/hello.txt"),
    ("case-sensitive", "HELLO.TXT"),
    ("png-real", "img.png"),
    ("jpg-uppercase-ext", "photo.JPG"),
    ("jpeg", "pic.jpeg"),
    ("gif", "anim.gif"),
    ("webp", "pic.webp"),
    ("pdf", "doc.pdf"),
    ("pdf-uppercase", "DOC.PDF"),
    ("png-ext-text-content", "notes.png"),
    ("png-in-middle-of-name", "image.png.txt"),
    ("script", "script.sh"),
    ("dir-trailing-slash", "dir/"),
    ("workdir-trailing-slash", "/workspace/"),
    ("leading-space", " hello.txt"),
    ("trailing-space", "hello.txt "),
    ("backslash-not-separator", "dir\\nested.txt"),
    ("dot-dot-only", ".."),
    ("outputs-root-dir", "/mnt/session/outputs"),
]:
    case("read", slug, "basic", R(fp))

for slug, vr in [
    ("range-2-3", [2, 3]),
    ("range-2-neg1", [2, -1]),
    ("range-2-0", [2, 0]),
    ("range-0-1", [0, 1]),
    ("range-1-1", [1, 1]),
    ("range-inverted", [3, 2]),
    ("range-past-eof", [10, 20]),
    ("range-last-line-past", [5, 99]),
    ("range-trailing-piece", [6, 6]),
    ("range-negative-start", [-5, 2]),
    ("range-empty-list", []),
    ("range-null", None),
    ("range-one-elem", [1]),
    ("range-three-elems", [1, 2, 3]),
    ("range-strings-coerced", ["1", "2"]),
    ("range-floats-integral", [1.0, 2.0]),
    ("range-float-fraction", [1.5, 2]),
    ("range-non-numeric-strings", ["a", "b"]),
    ("range-string", "1,2"),
    ("range-bools", [True, True]),
    ("range-dict", {"start": 1}),
    ("range-nested", [[1], [2]]),
]:
    case("read", slug, "basic", R("lines.txt", view_range=vr))

case("read", "range-crlf-keeps-cr", "basic", R("crlf.txt", view_range=[1, 2]))
case("read", "range-noeol-tail", "basic", R("noeol.txt", view_range=[2, 0]))
case("read", "range-empty-file", "basic", R("empty.txt", view_range=[1, 1]))
case("read", "range-on-image", "basic", R("img.png", view_range=[1, 2]))
case("read", "range-empty-on-image", "basic", R("img.png", view_range=[]))
case("read", "range-on-pdf", "basic", R("doc.pdf", view_range=[1, 1]))
case("read", "range-bad-len-on-missing", "basic", R("missing.txt", view_range=[1]))
case("read", "range-bad-len-outside", "basic", R("/etc/passwd", view_range=[1]))
case("read", "range-invalid-utf8", "basic", R("latin1.txt", view_range=[1, 1]))
case("read", "range-directory", "basic", R("dir", view_range=[1, 2]))
case("read", "unknown-key", "basic", CR("read", {"file_path": "hello.txt", "foo": 1}))
case("read", "unknown-key-path", "basic", CR("read", {"path": "hello.txt"}))
case("read", "missing-file-path", "basic", CR("read", {}))
case("read", "file-path-int", "basic", CR("read", {"file_path": 123}))
case("read", "file-path-null", "basic", CR("read", {"file_path": None}))
case("read", "file-path-list", "basic", CR("read", {"file_path": ["hello.txt"]}))
case("read", "file-path-bool", "basic", CR("read", {"file_path": True}))
case("read", "bash-created-then-read", "small", [B("printf 'made by bash\\n' > made.txt"), R("made.txt")])

# size caps
case("read", "over-default-cap", "big", R("big.txt"))
case("read", "over-cap-with-range", "big", R("big.txt", view_range=[1, 3]))
case("read", "over-cap-range-tail", "big", R("big.txt", view_range=[16384, -1]))
case("read", "over-cap-range-whole", "big", R("big.txt", view_range=[1, -1]))
case("read", "over-cap-range-too-wide", "big", R("manylines.txt", view_range=[1, 140000]))
case("read", "over-cap-range-late", "big", R("manylines.txt", view_range=[199990, 200000]))
case("read", "over-cap-range-past-eof", "big", R("manylines.txt", view_range=[300000, 300005]))
case("read", "over-cap-range-inverted", "big", R("manylines.txt", view_range=[9, 3]))
case("read", "long-line-alone", "big", R("longline.txt", view_range=[1, 1]))
case("read", "long-line-range", "big", R("longline.txt", view_range=[1, 2]))
case("read", "long-line-whole", "big", R("longline.txt"))
case("read", "image-over-default-cap", "big", R("big.png"))
case("read", "pdf-over-default-cap", "big", R("big.pdf"))
case("read", "custom-cap-exact", "big", R("c20.txt"), config={"max_file_bytes": 20})
case("read", "custom-cap-over", "big", R("c21.txt"), config={"max_file_bytes": 20})
case("read", "custom-cap-range", "big", R("ten.txt", view_range=[1, 5]), config={"max_file_bytes": 9})
case("read", "custom-cap-range-over", "big", R("ten.txt", view_range=[1, 6]), config={"max_file_bytes": 9})
case("read", "custom-cap-range-single-line", "big", R("c21.txt", view_range=[1, 1]), config={"max_file_bytes": 8})
case("read", "custom-cap-range-tail", "big", R("ten.txt", view_range=[9, -1]), config={"max_file_bytes": 6})
case("read", "uncapped-range", "big", R("ten.txt", view_range=[2, 3]), config={"max_file_bytes": None})
case("read", "uncapped-over-default", "big", R("big.txt", view_range=[16385, 0]), config={"max_file_bytes": None})
case("read", "image-cap-exact", "big", R("img75.png"), config={"max_image_base64_bytes": 100})
case("read", "image-cap-over", "big", R("img76.png"), config={"max_image_base64_bytes": 100})
case("read", "image-cap-tiny", "big", R("img75.png"), config={"max_image_base64_bytes": 7})
case("read", "image-file-cap-binds", "big", R("img75.png"), config={"max_file_bytes": 50})
case("read", "image-file-cap-min", "big", R("img76.png"), config={"max_file_bytes": 80, "max_image_base64_bytes": 100})
case("read", "image-uncapped-file-cap", "big", R("img76.png"), config={"max_image_base64_bytes": None, "max_file_bytes": 76})
case("read", "image-all-uncapped", "big", R("img76.png"), config={"max_image_base64_bytes": None, "max_file_bytes": None})
case("read", "image-default-file-cap-none", "big", R("big.png"), config={"max_file_bytes": None})
case("read", "pdf-cap-exact", "big", R("pdf100.pdf"), config={"max_pdf_bytes": 100})
case("read", "pdf-cap-over", "big", R("pdf100.pdf"), config={"max_pdf_bytes": 99})
case("read", "pdf-file-cap-binds", "big", R("pdf100.pdf"), config={"max_file_bytes": 64})
case("read", "pdf-uncapped-file-cap", "big", R("pdf100.pdf"), config={"max_pdf_bytes": None, "max_file_bytes": 99})

# ----------------------------- write --------------------------------------

W = lambda fp, content, **kw: C("write", file_path=fp, content=content, **kw)  # noqa: E731

case("write", "new-file", "writes", [W("new.txt", "brand new\n"), R("new.txt")])
case("write", "overwrite", "writes", [W("hello.txt", "replaced"), R("hello.txt")])
case("write", "overwrite-hardlink", "writes", [W("hard.txt", "via hardlink\n")])
case("write", "overwrite-executable", "writes", [W("script.sh", "#!/bin/sh\necho bye\n"), B("test -x script.sh && echo still-exec")])
case("write", "mkdir-parents", "writes", [W("a/b/c/d.txt", "deep\n"), R("a/b/c/d.txt")])
case("write", "unicode-counts-chars", "writes", [W("uni.txt", "héllo ✓ 名前\n"), B("wc -c < uni.txt")])
case("write", "emoji-counts-codepoints", "writes", W("emoji.txt", "🎉👍🏽"))
case("write", "empty-content", "writes", [W("zero.txt", ""), R("zero.txt")])
case("write", "crlf-preserved", "writes", [W("crlf2.txt", "x\r\ny\r\n"), R("crlf2.txt")])
case("write", "nul-content", "writes", [W("nul2.txt", "a\u0000b"), R("nul2.txt")])
case("write", "bom-content", "writes", [W("bom2.txt", "\ufeffx"), R("bom2.txt")])
case("write", "to-directory", "writes", W("dir", "x"))
case("write", "to-subdirectory", "writes", W("dir/sub", "x"))
case("write", "parent-is-file", "writes", W("hello.txt/child.txt", "x"))
case("write", "trailing-slash-makes-file", "writes", [W("newsub/", "slash\n"), B("ls -la newsub | cut -c1")])
case("write", "dot", "writes", W(".", "x"))
case("write", "empty-path", "writes", W("", "x"))
case("write", "absolute-inside", "writes", W("/workspace/abs.txt", "abs\n"))
case("write", "dotdot-inside", "writes", W("dir/../dd.txt", "dd\n"))
case("write", "via-link-inside", "writes", [W("link_in", "through link\n"), R("hello.txt")])
case("write", "via-link-dir", "writes", W("link_dir/new.txt", "in linked dir\n"))
case("write", "dangling-in-creates-target", "writes", [W("dangling_in", "created\n"), R("missing_target.txt")])
case("write", "dangling-in-new-dir", "writes", W("dangling_in_dir", "nested create\n"))
case("write", "dangling-out", "writes", W("dangling_out", "x"))
case("write", "link-out-abs", "writes", W("link_out_abs", "pwned"))
case("write", "link-out-rel", "writes", W("link_out_rel", "pwned"))
case("write", "link-dir-out-intermediate", "writes", W("link_dir_out/new.txt", "pwned"))
case("write", "escape-link-in-subdir", "writes", W("dir/escape_link", "pwned"))
case("write", "dotdot-outside", "writes", W("../outside/new.txt", "pwned"))
case("write", "abs-outside", "writes", W("/outside/new.txt", "pwned"))
case("write", "tmp-outside", "writes", W("/tmp/x.txt", "pwned"))
case("write", "loop", "writes", W("loop_a", "x"))
case("write", "loop-intermediate", "writes", W("loop_a/child", "x"))
case("write", "outputs", "writes", [W("/mnt/session/outputs/result.md", "# Result\n"), R("/mnt/session/outputs/result.md")])
case("write", "outputs-nested-new-dirs", "writes", W("/mnt/session/outputs/deep/x/y.txt", "y\n"))
case("write", "outputs-via-link", "writes", W("link_to_outputs/linked.md", "linked\n"))
case("write", "scratch-new", "writes", W("/mnt/memory/scratch/new.md", "scratch note\n"))
case("write", "scratch-overwrite", "writes", W("/mnt/memory/scratch/todo.md", "- [x] done\n"))
case("write", "scratch-via-link", "writes", W("link_to_scratch/linked.md", "x\n"))
case("write", "notes-readonly-new", "writes", W("/mnt/memory/notes/new.md", "x"))
case("write", "notes-readonly-existing", "writes", W("/mnt/memory/notes/policy.md", "x"))
case("write", "notes-readonly-root-itself", "writes", W("/mnt/memory/notes", "x"))
case("write", "notes-readonly-via-dotdot", "writes", W("/mnt/memory/scratch/../notes/x.md", "x"))
case("write", "notes-readonly-via-link", "writes", W("link_to_notes", "x"))
case("write", "notes-readonly-nested-new-dir", "writes", W("/mnt/memory/notes/newdir/x.md", "x"))
case("write", "memory-parent-outside", "writes", W("/mnt/memory/new.md", "x"))
case("write", "uploads-outside", "writes", W("/mnt/session/uploads/x", "x"))
case("write", "apostrophe-name", "writes", W("it's new.txt", "x\n"))
case("write", "tab-name", "writes", W("new\ttab.txt", "x\n"))
case("write", "newline-name", "writes", W("new\nline.txt", "x\n"))
case("write", "nfd-name-distinct", "writes", [W("cafe\u0301.txt", "nfd\n"), R("caf\u00e9.txt")])
case("write", "nul-in-path", "writes", W("bad\u0000.txt", "x"))
case("write", "long-name", "writes", W(LONG_NAME, "x"))
case("write", "hidden-file", "writes", W(".env", "SECRET=1\n"))
case("write", "then-edit-then-read", "writes", [W("seq.txt", "one two\n"), C("edit", file_path="seq.txt", old_string="two", new_string="2"), R("seq.txt")])
case("write", "existing-dir-trailing-slash", "writes", W("dir/", "x"))
case("write", "into-missing-dir-trailing-slash", "writes", W("newdir/sub/", "x"))
case("write", "twice-same-call-sequence", "writes", [W("t.txt", "first\n"), W("t.txt", "2nd\n"), R("t.txt")])
case("write", "unknown-key", "writes", CR("write", {"file_path": "x.txt", "content": "x", "mode": 420}))
case("write", "missing-content", "writes", CR("write", {"file_path": "x.txt"}))
case("write", "missing-file-path", "writes", CR("write", {"content": "x"}))
case("write", "content-int", "writes", CR("write", {"file_path": "x.txt", "content": 123}))
case("write", "content-null", "writes", CR("write", {"file_path": "x.txt", "content": None}))
case("write", "content-list", "writes", CR("write", {"file_path": "x.txt", "content": ["a", "b"]}))
case("write", "file-path-list", "writes", CR("write", {"file_path": ["x.txt"], "content": "x"}))

# ----------------------------- edit ---------------------------------------

E = lambda fp, old, new, **kw: C("edit", file_path=fp, old_string=old, new_string=new, **kw)  # noqa: E731

case("edit", "unique", "edits", [E("hello.txt", "world", "there"), R("hello.txt")])
case("edit", "not-found", "edits", E("hello.txt", "absent", "x"))
case("edit", "non-unique", "edits", E("repeat.txt", "foo", "qux"))
case("edit", "replace-all", "edits", [E("repeat.txt", "foo", "qux", replace_all=True), R("repeat.txt")])
case("edit", "replace-all-false", "edits", E("repeat.txt", "foo", "qux", replace_all=False))
case("edit", "replace-all-null", "edits", E("repeat.txt", "foo", "qux", replace_all=None))
case("edit", "replace-all-string-true", "edits", E("repeat.txt", "foo", "qux", replace_all="true"))
case("edit", "replace-all-string-yes", "edits", E("repeat.txt", "foo", "qux", replace_all="yes"))
case("edit", "replace-all-string-off", "edits", E("repeat.txt", "foo", "qux", replace_all="off"))
case("edit", "replace-all-int-1", "edits", E("repeat.txt", "foo", "qux", replace_all=1))
case("edit", "replace-all-int-2", "edits", E("repeat.txt", "foo", "qux", replace_all=2))
case("edit", "replace-all-maybe", "edits", E("repeat.txt", "foo", "qux", replace_all="maybe"))
case("edit", "replace-all-unique", "edits", E("hello.txt", "hello", "bye", replace_all=True))
case("edit", "overlapping-count", "edits", [E("aaaa.txt", "aa", "b", replace_all=True), R("aaaa.txt")])
case("edit", "overlapping-nonunique", "edits", E("aaaa.txt", "aa", "b"))
case("edit", "empty-old-nonempty-file", "edits", E("hello.txt", "", "X"))
case("edit", "empty-old-empty-file", "edits", [E("empty.txt", "", "inserted\n"), R("empty.txt")])
case("edit", "empty-old-replace-all", "edits", [E("abc.txt", "", "-", replace_all=True), R("abc.txt")])
case("edit", "same-old-new", "edits", E("hello.txt", "hello", "hello"))
case("edit", "literal-backrefs", "edits", [E("dollar.txt", "10", "$1 \\1 \\g<0> $&"), R("dollar.txt")])
case("edit", "delete-text", "edits", [E("hello.txt", " world", ""), R("hello.txt")])
case("edit", "multiline-old", "edits", [E("multi.txt", "alpha\nbeta\n", "AB\n"), R("multi.txt")])
case("edit", "lf-vs-crlf", "edits", E("crlf.txt", "one\ntwo", "x"))
case("edit", "crlf-match", "edits", [E("crlf.txt", "one\r\ntwo", "x"), R("crlf.txt")])
case("edit", "unicode", "edits", [E("unicode.txt", "名前", "name"), R("unicode.txt")])
case("edit", "nfd-old-vs-nfc-text", "edits", E("unicode.txt", "he\u0301llo", "x"))
case("edit", "bom-preserved", "edits", [E("bom.txt", "bom", "BOM"), C("read", file_path="bom.txt", view_range=[1, 1])])
case("edit", "nul-text", "edits", E("nul.txt", "a\u0000b", "ab"))
case("edit", "binary", "edits", E("binary.bin", "binary", "x"))
case("edit", "latin1", "edits", E("latin1.txt", "caf", "x"))
case("edit", "real-png", "edits", E("img.png", "PNG", "x"))
case("edit", "text-named-png", "edits", [E("notes.png", "really", "REALLY"), R("notes.png")])
case("edit", "directory", "edits", E("dir", "a", "b"))
case("edit", "fifo", "edits", E("fifo", "a", "b"))
case("edit", "missing", "edits", E("missing.txt", "a", "b"))
case("edit", "dangling-in", "edits", E("dangling_in", "a", "b"))
case("edit", "outside-abs", "edits", E("/outside/secret.txt", "TOP", "x"))
case("edit", "outside-link", "edits", E("link_out_abs", "TOP", "x"))
case("edit", "outside-link-rel", "edits", E("link_out_rel", "TOP", "x"))
case("edit", "via-link-inside", "edits", [E("link_in", "world", "linked"), R("hello.txt")])
case("edit", "via-hardlink", "edits", E("hard.txt", "world", "hard"))
case("edit", "loop", "edits", E("loop_a", "a", "b"))
case("edit", "notes-readonly", "edits", E("/mnt/memory/notes/policy.md", "nice", "mean"))
case("edit", "notes-readonly-missing", "edits", E("/mnt/memory/notes/missing.md", "a", "b"))
case("edit", "notes-via-link", "edits", E("link_to_notes", "nice", "mean"))
case("edit", "scratch", "edits", [E("/mnt/memory/scratch/todo.md", "[ ] task one", "[x] task one"), R("/mnt/memory/scratch/todo.md")])
case("edit", "outputs", "edits", E("/mnt/session/outputs/report.md", "draft", "final"))
case("edit", "apostrophe-name", "edits", E("it's.txt", "apostrophe", "quote"))
case("edit", "nul-in-path", "edits", E("x\u0000", "a", "b"))
case("edit", "trailing-slash", "edits", [E("hello.txt/", "world", "slash"), R("hello.txt")])
case("edit", "twice-in-sequence", "edits", [E("hello.txt", "hello", "hi"), E("hello.txt", "hello", "hi"), R("hello.txt")])
case("edit", "unknown-key", "edits", CR("edit", {"file_path": "hello.txt", "old_string": "hello", "new_string": "x", "count": 1}))
case("edit", "missing-new-string", "edits", CR("edit", {"file_path": "hello.txt", "old_string": "hello"}))
case("edit", "missing-old-string", "edits", CR("edit", {"file_path": "hello.txt", "new_string": "x"}))
case("edit", "old-string-int", "edits", CR("edit", {"file_path": "hello.txt", "old_string": 1, "new_string": "x"}))
case("edit", "new-string-null", "edits", CR("edit", {"file_path": "hello.txt", "old_string": "hello", "new_string": None}))
case("edit", "old-string-null", "edits", CR("edit", {"file_path": "hello.txt", "old_string": None, "new_string": "x"}))
case("edit", "over-default-cap", "big", E("big.txt", "abc", "x"))
case("edit", "exact-default-cap", "big", E("exact.txt", "abcde\n", "ABCDE\n", replace_all=True))
case("edit", "exact-default-cap-nonunique", "big", E("exact.txt", "abcde", "x"))
case("edit", "custom-cap-over", "big", E("c21.txt", "0", "x"), config={"max_file_bytes": 20})
case("edit", "custom-cap-exact", "big", E("c20.txt", "01234567890", "x"), config={"max_file_bytes": 20})
case("edit", "uncapped", "big", E("big.txt", "abcdefghijklmno\n", "", replace_all=True), config={"max_file_bytes": None})
case("edit", "write-then-edit-nonunique", "empty", [W("f.txt", "x x"), E("f.txt", "x", "y"), E("f.txt", "x", "y", replace_all=True), R("f.txt")])

# ----------------------------- glob ---------------------------------------

G = lambda pattern, **kw: C("glob", pattern=pattern, **kw)  # noqa: E731

for slug, pat, kw in [
    ("star-txt", "*.txt", {}),
    ("star", "*", {}),
    ("double-star-rs", "**/*.rs", {}),
    ("double-star-alone", "**", {}),
    ("double-star-slash", "**/", {}),
    ("subdir-double-star", "src/**", {}),
    ("subdir-star", "src/*", {}),
    ("subdir-double-star-star", "src/**/*", {}),
    ("subdir-double-star-rs", "src/**/*.rs", {}),
    ("trailing-slash-dirs", "*/", {}),
    ("double-star-dirs-slash", "**/*/", {}),
    ("question-mark", "?.txt", {}),
    ("char-class", "[ab].txt", {}),
    ("char-class-negated", "[!a].txt", {}),
    ("literal-brackets-unmatched", "[brackets].txt", {}),
    ("escaped-bracket", "[[]brackets].txt", {}),
    ("no-brace-expansion", "*.{txt,md}", {}),
    ("case-sensitive", "*.TXT", {}),
    ("dotfiles", ".*", {}),
    ("dotdir-contents", ".dotdir/*", {}),
    ("node-modules-not-skipped", "**/*.js", {}),
    ("git-not-skipped", ".git/*", {}),
    ("double-star-md", "**/*.md", {}),
    ("double-star-mod", "**/mod.rs", {}),
    ("literal-file", "a.txt", {}),
    ("literal-missing", "nope.md", {}),
    ("space-name", "space*", {}),
    ("dot-slash-prefix", "./*.md", {}),
    ("double-slash", "src//*.rs", {}),
    ("unclosed-bracket", "[", {}),
    ("absolute-pattern", "/etc/*", {}),
    ("absolute-pattern-inside", "/workspace/*.txt", {}),
    ("dotdot-pattern", "../*", {}),
    ("dotdot-middle", "src/../*", {}),
    ("dotdot-in-name-ok", "..foo*", {}),
    ("empty-pattern", "", {}),
    ("dot-pattern", ".", {}),
    ("triple-star", "***", {}),
    ("star-star-suffix", "a**", {}),
    ("path-subdir", "*.rs", {"path": "src"}),
    ("path-abs-subdir", "*.rs", {"path": "/workspace/src"}),
    ("path-link-root", "*.rs", {"path": "link_src"}),
    ("path-link-out", "*", {"path": "link_out"}),
    ("path-missing", "*", {"path": "missing"}),
    ("path-file", "*", {"path": "a.txt"}),
    ("path-dotdot-outside", "*", {"path": "../outside"}),
    ("path-abs-outside", "*", {"path": "/outside"}),
    ("path-etc", "*", {"path": "/etc"}),
    ("path-empty", "*.md", {"path": ""}),
    ("path-null", "*.md", {"path": None}),
    ("path-dot", "*.md", {"path": "."}),
    ("path-trailing-slash", "*", {"path": "src/"}),
    ("path-notes", "*", {"path": "/mnt/memory/notes"}),
    ("path-outputs-recursive", "**/*", {"path": "/mnt/session/outputs"}),
    ("path-scratch", "*.txt", {"path": "/mnt/memory/scratch"}),
    ("path-memory-parent", "*", {"path": "/mnt/memory"}),
    ("path-loop", "*", {"path": "loop"}),
    ("link-out-star", "link_out/*", {}),
    ("link-src-star", "link_src/*", {}),
    ("double-star-not-through-links", "**/lib.rs", {}),
    ("dangling-kept", "dang*", {}),
    ("loop-dropped", "loo*", {}),
    ("link-file", "link_file", {}),
    ("mtime-order", "z_*.txt", {}),
    ("empty-dir-contents", "empty_dir/*", {}),
    ("three-levels", "*/*/*", {}),
    ("file-trailing-slash", "a.txt/", {}),
    ("dir-literal-trailing-slash", "src/", {}),
    ("star-dot-star", "*.*", {}),
    ("hidden-double-star", "**/.*", {}),
]:
    case("glob", slug, "globtree", G(pat, **kw))

case("glob", "many-truncated-200", "globmany", G("many/*"))
case("glob", "many-double-star-truncated-200", "globmany", G("**/*.txt"))
case("glob", "many-prefix", "globmany", G("many/f1?5.txt"))
case("glob", "many-path", "globmany", G("*", path="many"))
case("glob", "unknown-key", "globtree", CR("glob", {"pattern": "*", "recursive": True}))
case("glob", "pattern-int", "globtree", CR("glob", {"pattern": 1}))
case("glob", "pattern-missing", "globtree", CR("glob", {"path": "src"}))
case("glob", "path-int", "globtree", CR("glob", {"pattern": "*", "path": 3}))
case("glob", "after-write-newest-first", "globtree", [W("src/zz_new.rs", "new\n"), G("src/*.rs")])
case("glob", "after-bash-touch-old", "globtree", [B("touch -d @1500000000 src/main.rs"), G("src/*.rs")])
case("glob", "bash-planted-link-out", "globtree", [B("ln -s /outside planted"), G("planted/*"), G("plant*")])
case("glob", "non-utf8-name", "globtree", [B("touch \"$(printf 'bad\\377name.txt')\" && touch -d @1900000000 \"$(printf 'bad\\377name.txt')\""), G("bad*"), B("rm -f bad*name.txt")])

# ----------------------------- grep ---------------------------------------

GR = lambda pattern, **kw: C("grep", pattern=pattern, **kw)  # noqa: E731

for slug, pat, kw in [
    ("tree-needle", "needle", {}),
    ("path-subdir", "needle", {"path": "src"}),
    ("path-file", "needle", {"path": "src/app.py"}),
    ("path-file-abs", "needle", {"path": "/workspace/src/app.py"}),
    ("path-link-file", "needle", {"path": "link_file"}),
    ("path-link-dir", "needle", {"path": "link_dir"}),
    ("path-link-out", "needle", {"path": "link_out"}),
    ("path-outside", "TOP", {"path": "/outside"}),
    ("path-outside-file", "TOP", {"path": "/outside/secret.txt"}),
    ("path-dotdot", "TOP", {"path": "../outside/secret.txt"}),
    ("path-missing", "needle", {"path": "missing"}),
    ("path-fifo", "needle", {"path": "fifo"}),
    ("path-empty", "hidden", {"path": ""}),
    ("path-null", "hidden", {"path": None}),
    ("path-dot", "hidden", {"path": "."}),
    ("path-node-modules-explicit", "needle", {"path": "node_modules"}),
    ("path-git-explicit", "needle", {"path": ".git"}),
    ("path-notes", "needle", {"path": "/mnt/memory/notes"}),
    ("path-scratch-file", "needle", {"path": "/mnt/memory/scratch/todo.md"}),
    ("path-memory-parent", "needle", {"path": "/mnt/memory"}),
    ("hidden-file-searched", "hidden", {}),
    ("git-pruned", "core", {}),
    ("node-modules-pruned", "exports", {}),
    ("nul-head-skipped", "binary", {}),
    ("nul-late-searched", "late", {}),
    ("nul-in-pattern", "\\x00late", {}),
    ("long-line-skipped", "needle", {"path": "long.txt"}),
    ("crlf-stripped", "crlf$", {"path": "crlf.txt"}),
    ("latin1-replaced", "needle", {"path": "latin1.txt"}),
    ("unicode-pattern", "名前", {}),
    ("unicode-file", "naïve", {"path": "unicode.txt"}),
    ("no-matches", "zzzznotthere", {}),
    ("deep", "deep", {}),
    ("case-sensitive", "NEEDLE", {}),
    ("inline-ignorecase", "(?i)needle upper", {}),
    ("truncation-single-file", "haystack", {"path": "big.txt"}),
    ("truncation-tree-one-file", "haystack", {}),
    ("empty-file", "", {"path": "empty.txt"}),
    ("path-trailing-slash", "needle", {"path": "src/"}),
    ("path-file-trailing-slash", "needle", {"path": "src/app.py/"}),
    ("path-loop", "x", {"path": "link_loop"}),
    ("multiline-pattern-no-match", "needle\nshort", {"path": "long.txt"}),
]:
    case("grep", slug, "greptree", GR(pat, **kw))

for slug, pat in [
    ("re-digits", "\\d+"),
    ("re-word-boundary", "\\bword\\b"),
    ("re-anchors", "^abc$"),
    ("re-empty-line", "^$"),
    ("re-empty-pattern", ""),
    ("re-dot", "x.y"),
    ("re-escaped-dot", "x\\.y"),
    ("re-literal-dollar", "end\\$"),
    ("re-backslash", "back\\\\slash"),
    ("re-tab", "\\t"),
    ("re-named-group", "(?P<name>foo)\\d+"),
    ("re-named-backref", "(?P<c>a)(?P=c)"),
    ("re-backref", "(a)\\1"),
    ("re-lookbehind", "(?<=foo)\\d+"),
    ("re-lookahead", "foo(?=\\d)"),
    ("re-neg-lookahead", "foo(?! )"),
    ("re-verbose", "(?x) f o o \\  b a r"),
    ("re-inline-i", "(?i)^word word word$"),
    ("re-scoped-flag", "(?i:WORD) word"),
    ("re-A-anchor", "\\Afoo"),
    ("re-Z-anchor", "bar\\Z"),
    ("re-posix-class-literal", "[[:digit:]]"),
    ("re-unicode-w", "caf\\w"),
    ("re-ascii-flag", "(?a)caf\\w"),
    ("re-alternation-empty", "abc|"),
    ("re-lazy", "f.*?o"),
    ("re-possessive", "a++"),
    ("re-atomic", "(?>a+)a"),
    ("re-bracket-literal", "\\[bracket\\]"),
    ("re-paren-literal", "\\(paren\\)"),
    ("re-unicode-escape", "\\u0063af"),
    ("re-hex-escape", "\\x66oo"),
    ("re-class-range", "[a-c]{3}"),
    ("re-brace-literal", "x{,"),
    ("re-quantifier-range", "a{2,3}"),
    # invalid regexes
    ("bad-open-paren", "("),
    ("bad-close-paren", ")"),
    ("bad-open-bracket", "["),
    ("bad-leading-star", "*"),
    ("bad-leading-plus", "+abc"),
    ("bad-multiple-repeat", "a**"),
    ("bad-range-order", "a{3,2}"),
    ("bad-class-range", "[z-a]"),
    ("bad-trailing-backslash", "abc\\"),
    ("bad-escape-p", "\\p{L}"),
    ("bad-escape-h", "\\h"),
    ("bad-escape-z-lower", "foo\\z"),
    ("bad-group-ref", "\\1"),
    ("bad-dup-group-name", "(?P<x>a)(?P<x>b)"),
    ("bad-group-name", "(?P<1x>a)"),
    ("bad-unknown-ext", "(?X)a"),
    ("bad-unterminated-flag", "(?i"),
    ("bad-lookbehind-variable", "(?<=a+)b"),
    ("bad-unknown-group-ref", "(?P=nope)"),
    ("bad-global-flag-not-at-start", "a(?i)b"),
    ("bad-huge-repeat", "x{99999999999}"),
    ("bad-rust-named-group", "(?<name>foo)"),
    ("bad-unterminated-name", "(?P<name"),
    ("bad-nothing-to-repeat-group", "(*)"),
    ("bad-missing-bracket-close-range", "[a-"),
    ("bad-unicode-escape-short", "\\u12"),
    ("bad-conditional", "(?(1)a|b)"),
]:
    case("grep", slug, "greptree", GR(pat, path="regex.txt"))

case("grep", "unknown-key", "greptree", CR("grep", {"pattern": "needle", "glob": "*.py"}))
case("grep", "unknown-key-ignore-case", "greptree", CR("grep", {"pattern": "needle", "-i": True}))
case("grep", "pattern-int", "greptree", CR("grep", {"pattern": 5}))
case("grep", "pattern-missing", "greptree", CR("grep", {"path": "src"}))
case("grep", "pattern-null", "greptree", CR("grep", {"pattern": None}))
case("grep", "path-list", "greptree", CR("grep", {"pattern": "x", "path": ["src"]}))
case("grep", "after-write", "greptree", [W("src/new.py", "needle = 'fresh'\n"), GR("fresh")])
case("grep", "bash-planted-link", "greptree", [B("ln -s /outside/secret.txt src/planted.txt"), GR("TOP"), GR("TOP", path="src/planted.txt")])
case("grep", "non-utf8-name", "greptree", [B("mkdir nu && printf 'needle\\n' > \"nu/$(printf 'bad\\377.txt')\""), GR("needle", path="nu"), B("rm -rf nu")])

# ------------------------ unknown tool names ------------------------------

for slug, name, inp in [
    ("web-fetch", "web_fetch", {"url": "https://example.com"}),
    ("web-search", "web_search", {"query": "x"}),
    ("capital-bash", "Bash", {"command": "echo hi"}),
    ("capital-read", "Read", {"file_path": "hello.txt"}),
    ("view", "view", {"path": "hello.txt"}),
    ("str-replace-based-edit-tool", "str_replace_based_edit_tool", {"command": "view", "path": "hello.txt"}),
    ("empty-name", "", {}),
    ("ls", "ls", {"path": "."}),
]:
    case("unknown", slug, "basic", CR(name, inp))
case("unknown", "mixed-with-known", "basic", [CR("web_fetch", {"url": "x"}), R("hello.txt"), CR("todo", {})])

# ----------------------------- bash ---------------------------------------

for slug, cmd in [
    ("echo", "echo hello"),
    ("printf-no-newline", "printf 'no newline'"),
    ("leading-whitespace-kept", "printf '   indented\\n'"),
    ("leading-newlines-kept", "printf '\\n\\nx\\n\\n\\n'"),
    ("trailing-newlines-stripped", "printf 'a\\n\\n\\n'"),
    ("trailing-spaces-kept", "printf 'a  '"),
    ("cr-kept", "printf 'a\\r\\nb\\r'"),
    ("false", "false"),
    ("true", "true"),
    ("colon", ":"),
    ("subshell-exit-3", "(exit 3)"),
    ("sh-exit-with-output", "sh -c 'echo err-out; exit 4'"),
    ("exit-status-in-same-call", "(exit 5); echo \"rc=$?\""),
    ("stderr-merged-error", "ls /workspace/missing-file"),
    ("stderr-only-success", "echo warn >&2"),
    ("stderr-stdout-order", "echo a; echo b >&2; echo c"),
    ("command-not-found", "nonexistent_cmd_xyz"),
    ("pwd", "pwd"),
    ("cat-relative", "cat hello.txt"),
    ("ls-sorted", "ls dir"),
    ("env-names", "env | cut -d= -f1 | sort"),
    ("env-values", "echo \"$PATH|$HOME|$LANG|$TERM|[$PS1]|[$PS2]\""),
    ("shlvl", "echo \"$SHLVL\""),
    ("dollar-zero", "echo \"$0\""),
    ("non-interactive", "case $- in *i*) echo interactive;; *) echo non-interactive;; esac"),
    ("not-login-shell", "shopt -q login_shell && echo login || echo not-login"),
    ("stdin-dev-null-cat", "cat"),
    ("stdin-dev-null-read", "read x; echo \"rc=$?\""),
    ("heredoc-quoted", "cat <<'EOF'\nline1\n$HOME\nEOF"),
    ("heredoc-expanded", "cat <<EOF\nhome=$HOME\nEOF"),
    ("multiline-script", "for i in 1 2 3; do\n  echo \"n=$i\"\ndone"),
    ("trailing-comment", "echo a # a trailing comment"),
    ("ansi-color", "printf '\\033[1;31mred\\033[0m plain'"),
    ("ansi-cursor", "printf 'a\\033[2Kb\\033[?25lc\\033[10;20Hd'"),
    ("ansi-osc-not-stripped", "printf '\\033]0;title\\007text'"),
    ("invalid-utf8", "printf '\\377\\376ok'"),
    ("truncated-utf8-sequence", "printf 'x\\342\\202'"),
    ("unicode-output", "echo '名前 ✓ 🎉'"),
    ("tab-output", "printf 'a\\tb'"),
    ("nul-output", "printf 'a\\000b'"),
    ("fake-sentinel", "echo __ANT_CMD_deadbeef_DONE__0"),
    ("brace-expansion", "echo {1..5}"),
    ("arith", "echo $((6 * 7))"),
    ("pipefail-default-off", "false | true; echo \"rc=$?\""),
    ("wait-background", "(sleep 0.2; echo bg-done) & wait; echo after-wait"),
    ("cd-missing", "cd /workspace/nope"),
    ("read-memory-notes", "cat /mnt/memory/notes/policy.md"),
    ("ls-outputs", "ls /mnt/session/outputs"),
    ("write-outputs", "echo artifact > /mnt/session/outputs/artifact.txt && cat /mnt/session/outputs/artifact.txt"),
    ("write-scratch", "echo note >> /mnt/memory/scratch/todo.md && tail -n 1 /mnt/memory/scratch/todo.md"),
    ("mkdir-and-write", "mkdir -p a/b && echo x > a/b/c.txt && ls -R a"),
    ("rm-file", "rm hello.txt && ls hello.txt"),
    ("mkfifo", "mkfifo newfifo && test -p newfifo && echo is-fifo"),
    ("symlink-plant", "ln -s /outside/secret.txt planted && readlink planted"),
    ("large-lines-not-truncated", "seq 1 2000 | tail -n 3"),
    ("output-truncated", "seq 1 30000"),
    ("long-sleep-ok", "sleep 0.3; echo slept"),
    ("alias-not-expanded", "alias hi='echo hi'\nhi"),
]:
    case("bash", slug, "small", B(cmd))

case("bash", "env-custom", "small", B("echo \"$FOO|$PATH\""), config={"env": {"FOO": "bar", "PATH": "/usr/bin:/bin"}})
case("bash", "env-no-path", "small", B("echo \"$PATH\"; echo \"$HOME\""), config={"env": {"LANG": "C.UTF-8"}})
case("bash", "env-empty", "small", B("env | cut -d= -f1 | sort"), config={"env": {}})
case("bash", "env-anthropic-verbatim", "small", B("echo \"$ANTHROPIC_API_KEY\""), config={"env": {"PATH": "/usr/bin:/bin", "ANTHROPIC_API_KEY": "sk-test"}})
case("bash", "cwd-persists", "small", [B("cd dir"), B("pwd")])
case("bash", "oldpwd-persists", "small", [B("cd dir"), B("cd - && pwd")])
case("bash", "export-persists", "small", [B("export FOO=exported"), B("echo \"$FOO\""), B("sh -c 'echo child=$FOO'")])
case("bash", "unexported-persists", "small", [B("BAR=local"), B("echo \"$BAR\""), B("sh -c 'echo child=[$BAR]'")])
case("bash", "function-persists", "small", [B("greet() { echo \"hi $1\"; }"), B("greet there")])
case("bash", "alias-with-expand-aliases", "small", [B("shopt -s expand_aliases; alias hi='echo aliased'"), B("hi")])
case("bash", "set-e-kills-shell", "small", [B("set -e"), B("false"), B("echo after")])
case("bash", "set-u-unbound", "small", [B("echo first"), B("set -u; echo $UNDEFINED_VAR"), B("echo after")])
case("bash", "background-output-later", "small", [B("(sleep 0.3; echo late-output) &"), B("sleep 1.5; echo now")])
case("bash", "background-job-persists", "small", [B("sleep 0.5 &"), B("wait; echo waited")])
case("bash", "exit", "small", [B("echo before"), B("exit"), B("echo after")])
case("bash", "exit-0", "small", [B("exit 0"), B("echo after")])
case("bash", "exit-3", "small", B("exit 3"))
case("bash", "output-then-exit", "small", [B("echo bye; exit 0"), B("echo after")])
case("bash", "trap-exit", "small", [B("trap 'echo trapped' EXIT"), B("exit 1")])
case("bash", "kill-self", "small", [B("kill -9 $$"), B("echo after")])
case("bash", "syntax-error", "small", [B("echo ("), B("echo after")])
case("bash", "syntax-error-line-number", "small", [B("echo one"), B("echo two"), B("if then fi")])
case("bash", "syntax-error-then-restart", "small", [B("echo ("), B(restart=True), B("echo recovered")])
case("bash", "timeout", "small", B("sleep 5", timeout_ms=500))
case("bash", "timeout-200", "small", B("sleep 5", timeout_ms=200))
case("bash", "timeout-700", "small", B("sleep 5", timeout_ms=700))
case("bash", "timeout-string-coerced", "small", B("sleep 5", timeout_ms="800"))
case("bash", "timeout-float-integral", "small", B("sleep 5", timeout_ms=500.0))
case("bash", "timeout-float-fraction", "small", B("echo x", timeout_ms=1.5))
case("bash", "timeout-non-numeric", "small", B("echo x", timeout_ms="abc"))
case("bash", "timeout-zero-default", "small", B("echo zero", timeout_ms=0))
case("bash", "timeout-null-default", "small", B("echo null", timeout_ms=None))
case("bash", "timeout-negative", "small", [B("echo neg", timeout_ms=-1), B("echo after")])
case("bash", "timeout-not-hit", "small", B("sleep 0.2; echo done", timeout_ms=5000))
case("bash", "timeout-output-discarded", "small", B("echo partial; sleep 5", timeout_ms=500))
case("bash", "timeout-then-dead", "small", [B("sleep 5", timeout_ms=500), B("echo after"), B("echo again")])
case("bash", "timeout-then-restart", "small", [B("export KEEP=1"), B("sleep 5", timeout_ms=500), B(restart=True), B("echo \"keep=[$KEEP]\"; pwd")])
case("bash", "unterminated-quote-times-out", "small", B("echo \"abc", timeout_ms=500))
case("bash", "unterminated-heredoc-times-out", "small", B("cat <<EOF\nno end", timeout_ms=500))
case("bash", "line-continuation-times-out", "small", B("echo a \\", timeout_ms=500))
case("bash", "exec-redirect-swallows-sentinel", "small", B("exec >/dev/null", timeout_ms=500))
case("bash", "restart", "small", B(restart=True))
case("bash", "restart-ignores-command", "small", [B("touch restart_ran.txt", restart=True), B("ls restart_ran.txt")])
case("bash", "restart-resets-state", "small", [B("cd dir; export V=1; f() { echo f; }"), B(restart=True), B("pwd; echo \"v=[$V]\"; type f")])
case("bash", "restart-string-yes", "small", B("echo x", restart="yes"))
case("bash", "restart-string-true", "small", B(restart="true"))
case("bash", "restart-false-runs", "small", B("echo ran", restart=False))
case("bash", "restart-null-runs", "small", B("echo ran", restart=None))
case("bash", "restart-int-1", "small", B(restart=1))
case("bash", "restart-maybe", "small", B("echo x", restart="maybe"))
case("bash", "restart-first-call-then-run", "small", [B(restart=True), B("echo fresh")])
case("bash", "command-missing", "small", CR("bash", {}))
case("bash", "command-empty", "small", B(""))
case("bash", "command-null", "small", CR("bash", {"command": None}))
case("bash", "command-int", "small", CR("bash", {"command": 123}))
case("bash", "command-list", "small", CR("bash", {"command": ["echo", "hi"]}))
case("bash", "command-bool", "small", CR("bash", {"command": True}))
case("bash", "unknown-key", "small", CR("bash", {"command": "echo x", "cwd": "/"}))
case("bash", "unknown-key-description", "small", CR("bash", {"command": "echo x", "description": "print x"}))
case("bash", "restart-false-no-command", "small", B(restart=False))
case("bash", "write-then-read-tool", "small", [B("printf 'from bash\\n' > fromsh.txt"), R("fromsh.txt")])
case("bash", "write-then-edit-tool", "small", [B("printf 'from bash\\n' > fromsh.txt"), E("fromsh.txt", "bash", "edit"), B("cat fromsh.txt")])
case("bash", "write-tool-then-bash", "small", [W("w.txt", "written\n"), B("cat w.txt")])
case("bash", "planted-link-read-refused", "small", [B("ln -s ../outside/secret.txt sneaky"), R("sneaky")])
case("bash", "planted-dir-link-write-refused", "small", [B("ln -s /outside sneakydir"), W("sneakydir/x.txt", "x")])
case("bash", "mkfifo-then-read-tool", "small", [B("mkfifo p2"), R("p2")])
case("bash", "cwd-not-used-by-file-tools", "small", [B("cd dir"), R("nested.txt"), R("hello.txt")])
case("bash", "output-exact-limit", "small", B("head -c 102348 /dev/zero | tr '\\0' a"))
# 102448 + 52 sentinel bytes = 102500: over the 102400 cap by 100, so the
# sentinel never straddles a 4 KiB read (one byte over is racy in the reference).
case("bash", "output-over-limit", "small", B("head -c 102448 /dev/zero | tr '\\0' b"))

# --------------------- deliberate deviations (our sandbox) -----------------

case(
    "bash",
    "write-readonly-store",
    "small",
    [B("echo changed > /mnt/memory/notes/policy.md && cat /mnt/memory/notes/policy.md")],
    deviation="reference bash ignores read_only_roots and writes the read-only store; wasm-sandbox mounts it read-only",
)
case(
    "bash",
    "read-outside",
    "small",
    [B("cat /outside/secret.txt")],
    deviation="reference bash is unconfined and reads /outside; wasm-sandbox's bubblewrap shows only the roots",
)
case(
    "bash",
    "write-outside",
    "small",
    [B("echo x > /outside/new.txt && cat /outside/new.txt")],
    deviation="reference bash is unconfined and writes /outside; wasm-sandbox's bubblewrap shows only the roots",
)


# --------------------------------------------------------------------------
# Inner runner (inside the namespace + chroot)
# --------------------------------------------------------------------------


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


def _setup_namespace_root() -> str:
    """Build a chroot (tmpfs) with the host's /usr and /etc, the Python
    interpreter and the venv bound at their own paths, and tmpfs roots."""
    newroot = os.environ["DIFFTEST_NEWROOT"]
    _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "difftest", newroot])
    for name in sorted(os.listdir("/")):
        src = os.path.join("/", name)
        if os.path.islink(src) and name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
            os.symlink(os.readlink(src), os.path.join(newroot, name))
    for d in ("usr", "etc"):
        os.makedirs(os.path.join(newroot, d))
        _run(["mount", "--rbind", f"/{d}", os.path.join(newroot, d)])
        subprocess.run(["mount", "-o", "remount,bind,ro", os.path.join(newroot, d)], check=False)
    os.makedirs(os.path.join(newroot, "dev"))
    _run(["mount", "--rbind", "/dev", os.path.join(newroot, "dev")])
    for p in sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}):
        if p.startswith("/usr"):
            continue
        os.makedirs(newroot + p, exist_ok=True)
        _run(["mount", "--bind", p, newroot + p])
        subprocess.run(["mount", "-o", "remount,bind,ro", newroot + p], check=False)
    if os.path.realpath(sys.prefix) != sys.prefix:
        raise SystemExit("the venv path must not contain symlinks")
    os.makedirs(os.path.join(newroot, "proc"))
    _run(["mount", "-t", "proc", "proc", os.path.join(newroot, "proc")])
    os.makedirs(os.path.join(newroot, "tmp"))
    _run(["mount", "-t", "tmpfs", "-o", "mode=1777", "tmp", os.path.join(newroot, "tmp")])
    for r in ROOTS + [OUTSIDE]:
        os.makedirs(newroot + r)
        _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "root", newroot + r])
    os.chroot(newroot)
    os.chdir("/")
    return newroot


def _force_rm(path: str) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        os.chmod(path, 0o755)
        for name in os.listdir(path):
            _force_rm(os.path.join(path, name))
        os.rmdir(path)
    else:
        os.unlink(path)


def _reset_roots() -> None:
    for r in ROOTS + [OUTSIDE]:
        os.chmod(r, 0o755)
        for name in os.listdir(r):
            _force_rm(os.path.join(r, name))


def _build_fixture(entries: list[dict]) -> None:
    for e in entries:
        p, kind = e["path"], e["kind"]
        if kind == "dir":
            os.makedirs(p, exist_ok=True)
        elif kind == "file":
            if "content_b64" in e:
                data = base64.b64decode(e["content_b64"])
            elif "repeat" in e:
                data = e["repeat"]["unit"].encode("utf-8") * e["repeat"]["times"]
            else:
                data = e["content"].encode("utf-8")
            with open(p, "wb") as f:
                f.write(data)
        elif kind == "symlink":
            os.symlink(e["target"], p)
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "hardlink":
            os.link(e["target"], p)
        else:
            raise SystemExit(f"unknown kind {kind}")
        if "mode" in e and kind in ("file", "dir", "fifo"):
            os.chmod(p, e["mode"])
    timed = [e for e in entries if "mtime" in e and e["kind"] in ("file", "dir", "fifo")]
    for e in sorted(timed, key=lambda e: -e["path"].count("/")):
        os.utime(e["path"], (e["mtime"], e["mtime"]))


def _snapshot() -> dict:
    tree: dict[str, dict] = {}

    def walk(d: str) -> None:
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            try:
                p.encode("utf-8")
            except UnicodeEncodeError:
                raise SystemExit(f"tree_after cannot hold the non-UTF-8 name {p!r}; clean it up in the case") from None
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                tree[p] = {"kind": "symlink", "target": os.readlink(p)}
            elif stat.S_ISDIR(st.st_mode):
                tree[p] = {"kind": "dir"}
                walk(p)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                tree[p] = {"kind": "file", "sha256": h.hexdigest(), "size": st.st_size}
            elif stat.S_ISFIFO(st.st_mode):
                tree[p] = {"kind": "fifo"}
            else:
                tree[p] = {"kind": "other"}

    for r in ROOTS + [OUTSIDE]:
        walk(r)
    return dict(sorted(tree.items()))


def _kill_strays() -> None:
    me = os.getpid()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            try:
                os.kill(int(name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


def _grep_files_with_hits(inp: dict) -> int:
    """How many files the walker would report hits from (ignoring the output
    cap): a truncated result is only portable when this is 1."""
    import re

    rx = re.compile(inp["pattern"])
    root = os.path.realpath(os.path.join(WORKDIR, inp.get("path") or "."))
    if os.path.isfile(root):
        return 1
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            d for d in dirnames if d not in (".git", "node_modules") and not os.path.islink(os.path.join(dirpath, d))
        ]
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            with open(full, "rb") as f:
                data = f.read()
            if b"\x00" in data[:512]:
                continue
            for raw in data.splitlines(keepends=True):
                if len(raw) <= 2000 and rx.search(raw.decode(errors="replace").rstrip("\r\n")):
                    count += 1
                    break
    return count


def _order_note(call: dict, result: dict) -> str | None:
    """Flag results whose line order the reference takes from directory
    listing order (filesystem dependent): grep hits from several files, and
    glob entries with equal mtimes. Returns 'unordered', None, or raises when
    even the *set* of lines depends on listing order."""
    if result is None or result["is_error"] or call["name"] not in ("glob", "grep"):
        return None
    blocks = result["content"]
    if len(blocks) != 1 or blocks[0]["type"] != "text":
        return None
    text = blocks[0]["text"]
    if text == "no matches":
        return None
    lines = text.split("\n")
    if call["name"] == "grep":
        truncated = lines[-1].startswith("[output truncated at ")
        files = {ln.split(":", 1)[0] for ln in lines if not ln.startswith("[output truncated at ")}
        if truncated and _grep_files_with_hits(call["input"]) > 1:
            raise SystemExit(f"ambiguous grep case (truncated, several files match): {call}")
        return "unordered" if len(files) > 1 else None
    mt = []
    for ln in lines:
        try:
            mt.append(os.stat(ln).st_mtime_ns)
        except (OSError, ValueError):
            mt.append(0)
    if len(set(mt)) != len(mt):
        if len(lines) >= 200:
            raise SystemExit(f"ambiguous glob case (ties at the 200 cap): {call}")
        return "unordered"
    return None


def inner_main() -> None:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    only = os.environ.get("DIFFTEST_ONLY", "")
    _setup_namespace_root()
    os.environ.clear()
    os.environ.update(BASE_ENV)
    os.umask(0o022)

    import logging
    import warnings
    from types import SimpleNamespace

    import anyio
    import anthropic
    from anthropic.lib.tools._beta_functions import aclose_runnable_tool
    from anthropic.lib.tools._beta_session_runner import SessionToolRunner
    from anthropic.lib.tools._tool_dispatch import tool_registry
    from anthropic.lib.tools.agent_toolset import AgentToolContext, beta_agent_toolset_20260401

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    if anthropic.__version__ != SDK_VERSION or sys.version_info[:2] != (3, 12):
        raise SystemExit(f"need anthropic {SDK_VERSION} on CPython 3.12, got {anthropic.__version__} {sys.version}")
    if shutil.which("rg") or any(os.path.exists(os.path.join(d, "rg")) for d in os.get_exec_path()):
        raise SystemExit("rg is reachable; the reference must use the walker grep")

    async def run_case(c: dict) -> dict:
        cfg = c["config"]
        kw = {k: cfg[k] for k in ("max_file_bytes", "max_image_base64_bytes", "max_pdf_bytes") if k in cfg}
        ctx = AgentToolContext(
            workdir=WORKDIR,
            allowed_roots=list(ALLOWED_ROOTS),
            read_only_roots=list(READ_ONLY_ROOTS),
            env=dict(cfg.get("env", BASE_ENV)),
            **kw,
        )
        tools = beta_agent_toolset_20260401(ctx)
        registry = tool_registry(tools)
        results: list = []
        unordered: list[int] = []
        try:
            for i, call in enumerate(c["calls"]):
                tool = registry.get(call["name"])
                if tool is None:
                    results.append(None)
                    continue
                ev = SimpleNamespace(type="agent.tool_use", id=f"sevt_{i}", name=call["name"], input=call["input"])
                event, _recorded = await SessionToolRunner._call_tool(None, tool, ev, dict(ev.input))
                res = {"content": event["content"], "is_error": event["is_error"]}
                results.append(res)
                if _order_note(call, res):
                    unordered.append(i)
                if call["name"] == "bash":
                    await anyio.sleep(BASH_SETTLE_S)
        finally:
            with anyio.CancelScope(shield=True):
                for t in tools:
                    await aclose_runnable_tool(t)
                await ctx.close()
        rec = {
            "id": c["id"],
            "tool": c["tool"],
            "fixture": c["fixture"],
            "config": cfg,
            "calls": c["calls"],
            "results": results,
            "tree_after": _snapshot() if c["_tree"] else None,
        }
        if unordered:
            rec["unordered"] = unordered
        if "note" in c:
            rec["note"] = c["note"]
        return rec

    for c in CASES + DEVIATIONS:
        if only and only not in c["id"]:
            continue
        _reset_roots()
        _build_fixture(FIXTURES[c["fixture"]])
        rec = anyio.run(run_case, c)
        _kill_strays()
        out.write(json.dumps(rec, ensure_ascii=True) + "\n")
        out.flush()
        print(f"  {c['id']}", file=sys.stderr, flush=True)
    out.close()


# --------------------------------------------------------------------------
# Outer driver
# --------------------------------------------------------------------------


def _check_strings(obj, where: str) -> None:
    """JSON consumers (serde_json) reject lone surrogates: refuse them here."""
    if isinstance(obj, str):
        obj.encode("utf-8")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_strings(k, where)
            _check_strings(v, where)
    elif isinstance(obj, list):
        for v in obj:
            _check_strings(v, where)


def outer_main(args: argparse.Namespace) -> None:
    import anthropic  # noqa: F401  (fail early outside the venv)

    if sys.version_info[:2] != (3, 12) or anthropic.__version__ != SDK_VERSION:
        raise SystemExit(f"run with the venv's CPython 3.12 + anthropic {SDK_VERSION} (see regen.sh)")
    ids = [c["id"] for c in CASES + DEVIATIONS]
    if len(ids) != len(set(ids)):
        raise SystemExit("duplicate case ids")
    for c in CASES + DEVIATIONS:
        _check_strings(c["calls"], c["id"])
    outdir = Path(args.out).resolve()
    (outdir / "fixtures").mkdir(parents=True, exist_ok=True)

    newroot = tempfile.mkdtemp(prefix="difftest-root-")
    env = dict(os.environ, DIFFTEST_NEWROOT=newroot, DIFFTEST_ONLY=args.only or "")
    ns = ["--mount", "--pid", "--fork", "--propagation", "private"]
    if os.geteuid() != 0:
        ns = ["--user", "--map-root-user"] + ns
    cmd = ["unshare", *ns, "--", sys.executable, str(Path(__file__).resolve()), "--inner"]
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=False)
    finally:
        os.rmdir(newroot)
    if proc.returncode != 0:
        raise SystemExit(f"inner run failed with exit {proc.returncode}")
    records = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    main_ids = {c["id"] for c in CASES}
    for r in records:
        _check_strings(r, r["id"])
        if r["id"] in main_ids and r["tree_after"] is not None:
            before = {e["path"] for e in FIXTURES[r["fixture"]] if e["path"].startswith(OUTSIDE + "/")}
            after = {p for p in r["tree_after"] if p.startswith(OUTSIDE + "/")}
            if before != after or r["tree_after"][f"{OUTSIDE}/secret.txt"]["size"] != 30:
                raise SystemExit(f"{r['id']}: /outside changed; move the case to the deviations")

    if args.only:
        for r in records:
            print(json.dumps(r, ensure_ascii=False)[:4000])
        return

    for old in (outdir / "fixtures").glob("*.json"):
        old.unlink()
    for name, entries in FIXTURES.items():
        (outdir / "fixtures" / f"{name}.json").write_text(json.dumps(entries, ensure_ascii=True, indent=1) + "\n")
    with open(outdir / "cases.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            if r["id"] in main_ids:
                f.write(json.dumps(r, ensure_ascii=True, sort_keys=False) + "\n")
    with open(outdir / "cases_deviations.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            if r["id"] not in main_ids:
                f.write(json.dumps(r, ensure_ascii=True) + "\n")
    (outdir / "base_config.json").write_text(json.dumps(BASE_CONFIG, indent=1) + "\n")

    counts: dict[str, int] = {}
    for r in records:
        if r["id"] in main_ids:
            counts[r["tool"]] = counts.get(r["tool"], 0) + 1
    file_tools = sum(v for k, v in counts.items() if k != "bash")
    print(f"cases: {counts}; file-tool+unknown: {file_tools}; bash: {counts.get('bash', 0)}; "
          f"deviations: {len(records) - sum(counts.values())}", file=sys.stderr)


OUTPUT_FILES = ("cases.jsonl", "cases_deviations.jsonl", "base_config.json")


def check_main() -> None:
    """Regenerate into a temporary directory and compare with the files here."""
    with tempfile.TemporaryDirectory(prefix="difftest-check-") as tmp:
        outer_main(argparse.Namespace(out=tmp, only=None))
        names = list(OUTPUT_FILES) + sorted(f"fixtures/{p.name}" for p in (HERE / "fixtures").glob("*.json"))
        names += sorted(f"fixtures/{p.name}" for p in (Path(tmp) / "fixtures").glob("*.json"))
        differ = sorted({n for n in names if not (HERE / n).exists() or not (Path(tmp) / n).exists()
                         or (HERE / n).read_bytes() != (Path(tmp) / n).read_bytes()})
    if differ:
        raise SystemExit(f"regenerated output differs from the checked-in files: {differ}")
    print("check: regenerated output is identical", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE), help="output directory (default: this directory)")
    ap.add_argument("--check", action="store_true", help="regenerate to a temp dir and diff against the files here")
    ap.add_argument("--only", help="run only cases whose id contains this; print them instead of writing files")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner_main()
    elif args.check:
        check_main()
    else:
        outer_main(args)


if __name__ == "__main__":
    main()
