"""nanoGPT-style settings: every UPPER_CASE constant at the top of a script becomes a `--lower-case` flag, and every
value is checked against what the libraries will accept before any heavy import. A bad value ends the script with one
line naming the flag and the accepted range (exit 2); Ctrl-C ends it with one line (exit 130), keeping finished work."""
import argparse
import math
import os
import sys
from contextlib import suppress
from pathlib import Path

from lib import store

INTERRUPTED = "interrupted - finished work is kept; run again to continue"
# Constants named like this hold a path: a relative path given on the command line is taken from the current folder.
PATH_SUFFIXES = ("_CSV", "_DIR", "_PATH", "_FILE", "_JSONL")


class Check:
    """A rule for one setting: `accepts` says in words what is allowed, calling it says whether a value is."""

    def __init__(self, accepts, test):
        self.accepts, self.test = accepts, test

    def __call__(self, value):
        try:
            return bool(self.test(value))
        except (TypeError, ValueError, OverflowError):
            return False


def number(value):
    """A finite int or float from a setting's value (also written as text, e.g. LEARNING_RATE='2e-4'); not a bool."""
    n = float(value) if isinstance(value, str) else value
    if isinstance(value, bool) or not isinstance(n, (int, float)) or not math.isfinite(n):
        raise ValueError(f"not a finite number: {value!r}")
    return n


def value(setting):
    """A setting as the libraries want it: a number given as text ('2e-4', '8') becomes a number."""
    with suppress(ValueError):
        n = number(setting)
        return int(n) if n == int(n) and not isinstance(setting, float) else n
    return setting


def between(low, high):
    """A number from low to high, both included."""
    return Check(f"a number from {low:g} to {high:g}", lambda v: low <= number(v) <= high)


def whole(low, high):
    """A whole number from low to high, both included."""
    return Check(f"a whole number from {low} to {high}", lambda v: low <= number(v) <= high and float(v).is_integer())


def either(*options):
    """Passes when any option does: a Check, or a literal value such as "auto"."""
    words = " or ".join(o.accepts if isinstance(o, Check) else repr(o) for o in options)
    return Check(words, lambda v: any(o(v) if isinstance(o, Check) else v == o for o in options))


def one_of(*words):
    return Check("one of " + ", ".join(map(repr, words)), lambda v: v in words)


def parse_epochs(text):
    """'1,5' -> [1, 5]: the runs a script makes or reads (outputs/adapters/epochsN), repeats dropped."""
    parts = [part.strip() for part in str(text).split(",")]
    if not all(part.isascii() and part.isdigit() and 1 <= int(part) <= 100 for part in parts):
        raise ValueError(text)
    return list(dict.fromkeys(int(part) for part in parts))


def parse_range(text):
    """'20-29' -> [20, ..., 29]."""
    first, last = (int(part) for part in str(text).split("-"))
    if not 0 <= first <= last:
        raise ValueError(text)
    return list(range(first, last + 1))


epochs = Check("whole numbers from 1 to 100 separated by commas, e.g. 1,5", parse_epochs)
index_range = Check("FIRST-LAST, two whole numbers from 0 with FIRST <= LAST, e.g. 20-29", parse_range)
not_empty = Check("not empty", lambda v: str(v).strip() != "")
seed = whole(0, 2**32 - 1)  # numpy's seed range


def choose(flag, value, names):
    """One line and exit 2 unless `value` is one of `names`: a library's own list (e.g. transformers' schedulers)."""
    if value not in names:
        store.fail(f"{flag} must be one of {', '.join(names)}, got {value!r}", 2)


def user_path(text, base=None):
    """A path as the user means it: ~ expanded, a relative path taken from `base` (default: the current folder)."""
    # os.path.join keeps an absolute path (the second part) as it is
    return Path(os.path.abspath(os.path.join(base or os.getcwd(), os.path.expanduser(str(text).strip()))))


BOOLS = {**dict.fromkeys(("1", "true", "yes", "on"), True), **dict.fromkeys(("0", "false", "no", "off"), False)}
EXPECTED = {bool: "true or false", int: "a whole number", float: "a number", Path: "a path that is not empty"}
METAVARS = {bool: "true|false", Path: "PATH"}
HELP = {bool: "(bool)", Path: "(path; a relative path is taken from the current directory)"}


def _typed(kind):
    """argparse's type= for a setting of this kind (a bool written as true|false, a path taken from the current folder);
    a value of another kind is one line naming what was expected."""
    def parse(text):
        if kind is bool and text.lower() in BOOLS:
            return BOOLS[text.lower()]
        if kind is Path and text.strip():
            return user_path(text)
        with suppress(ValueError):
            if kind in (int, float):
                return kind(text)
        raise argparse.ArgumentTypeError(f"expected {EXPECTED[kind]}, got {text!r}")
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"error: {message} (see --help)\n")


def configure(namespace, doc, checks=None):
    """Parse the command line into the script's constants (updated in place) and check every one of them. `checks`
    maps a constant's name to a Check; every number and every word-valued setting needs one, so nothing reaches the
    libraries unchecked. Returns the parsed args (args.force: redo finished work)."""
    install_interrupt_handler()
    checks = dict(checks or {})
    parser = _Parser(description=doc, formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    root = Path(namespace.get("__file__", ".")).resolve().parent
    for name, value in list(namespace.items()):
        if not name.isupper() or name.startswith("_") or not isinstance(value, (int, float, str, bool)):
            continue
        kind = Path if isinstance(value, str) and name.endswith(PATH_SUFFIXES) else type(value)
        if kind is Path:
            namespace[name] = value = str(user_path(value, base=root))  # a default written in a script: from the repo
        elif kind is not bool and name not in checks:
            raise KeyError(f"configure: {name} has no check")  # a developer's slip, caught by any test run
        parser.add_argument("--" + name.lower().replace("_", "-"), dest=name, default=value, metavar=METAVARS.get(kind),
                            type=str if kind is str else _typed(kind),
                            help=HELP.get(kind) or f"({kind.__name__}; {checks[name].accepts})")
    parser.add_argument("--force", action="store_true", help="redo work whose outputs already exist")
    args = parser.parse_args()
    for name, check in checks.items():
        if not check(value := getattr(args, name)):
            store.fail(f"--{name.lower().replace('_', '-')} ({name}) must be {check.accepts}, got {value!r}", 2)
    namespace.update({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k.isupper()})
    return args


def install_interrupt_handler():
    """Ctrl-C anywhere (inside torch, a progress bar, a thread pool) ends the script with one line and exit 130.
    Outputs are written atomically or row by row, so what finished is on disk. os._exit: a thread pool would otherwise
    keep the interpreter alive until its requests end."""
    previous = sys.excepthook
    if getattr(previous, "emoji_interrupt", False):
        return

    def hook(kind, value, traceback):
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, traceback)
        try:
            sys.stdout.flush()
            bars = getattr(getattr(sys.modules.get("tqdm"), "tqdm", None), "_instances", None)
            # On a terminal the ^C echo, in a log an open progress bar, leave the line unfinished: start a new one.
            print(("\n" if sys.stderr.isatty() or bars else "") + INTERRUPTED, file=sys.stderr, flush=True)
        finally:
            os._exit(130)

    hook.emoji_interrupt = True
    sys.excepthook = hook
