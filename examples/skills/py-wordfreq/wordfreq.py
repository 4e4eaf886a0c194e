"""wordfreq: the Python example of a skill that ships a WASI component.

Built with componentize-py into ``wordfreq.wasm`` (a ``wasi:cli/command``) by
``build.sh``; the agent runs it from bash with::

    wasm-run skills/py-wordfreq/wordfreq.wasm [--top N] [FILE...]

The same file also runs natively (``python3 wordfreq.py``), which is what the
benchmark compares the component against. It prints one JSON line: per-file line and word counts and the N (default 10)
most frequent words, case-folded. Standard library only: the interpreter and
the stdlib modules it imports are inside the component, so it needs no Python
on the host and reaches only the session's directories (``/workspace``,
``/mnt/session/outputs``, ``/mnt/memory/*``, and ``.``). Errors go to stderr as
``wordfreq: PATH: reason``; the exit status is then 1.

componentize-py snapshots the interpreter after importing this module at build
time, and only modules imported by then are in the component: import at top
level every stdlib module the code needs, including ones the stdlib imports
lazily (``heapq`` for ``Counter.most_common``). A missing one fails at run time
with ``ModuleNotFoundError``.
"""

import heapq  # noqa: F401  (Counter.most_common imports it lazily; see below)
import json
import re
import sys
from collections import Counter

try:  # inside the component (componentize-py's generated bindings)
    from componentize_py_types import Err
    from wit_world import exports
except ImportError:  # plain `python3 wordfreq.py` (the native path, for comparison)
    exports = None

WORD = re.compile(r"[^\W_]+")


def main(argv: list[str]) -> int:
    top = 10
    if "--top" in argv:
        i = argv.index("--top")
        try:
            top = int(argv[i + 1])
        except (IndexError, ValueError):
            print("wordfreq: --top needs a number", file=sys.stderr)
            return 2
        del argv[i : i + 2]
    counts: Counter[str] = Counter()
    files: dict[str, dict[str, int]] = {}
    status = 0
    for name in argv or ["-"]:
        try:
            if name == "-":
                text = sys.stdin.read()
            else:
                with open(name, encoding="utf-8", errors="replace") as f:
                    text = f.read()
        except OSError as e:
            print(f"wordfreq: {name}: {e.strerror}", file=sys.stderr)
            status = 1
            continue
        files[name] = {"lines": text.count("\n"), "words": len(text.split())}
        counts.update(w.lower() for w in WORD.findall(text))
    print(json.dumps({"files": files, "top": [[w, n] for w, n in counts.most_common(top)]}))
    return status


if exports is not None:

    class Run(exports.Run):
        def run(self) -> None:
            if main(sys.argv[1:]) != 0:
                raise Err(None)

elif __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
