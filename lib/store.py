"""Where every output goes and how it is written and read back.

- Paths: outputs go under EMOJI_OUT (default outputs/ in the repository).
- Writes are atomic (a temporary file or folder, then a rename), so a full disk, a kill or Ctrl-C never replaces a good
  file with a broken one; a write that fails says so in one line naming the path.
- Readers never write, and a damaged file is one line naming it and what to run, never a traceback.
- Provenance: each output records a stamp (the resolved settings that made it, its inputs' fingerprints and the sizes
  of the files it vouches for); a step redoes an output exactly when its stamp no longer matches.
- A lock per step and output folder: a second copy of a step says a run is in progress instead of corrupting files.
"""
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
RAW_CSV = DATA_DIR / "emoji_pairs.csv"


def fail(message, code=1):
    """End the script with one line on stderr."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def redo(path, problem, script):
    """End the script with one line: `path`, what is wrong with it (`problem`, e.g. "is damaged"), and the step that
    makes it again (`script`, run with --force)."""
    fail(f"{display(path)} {problem} - run `python {script} --force`.")


def _out_dir():
    """EMOJI_OUT as the user means it (~ expanded); refused when empty or when it (or a folder above it) is a file."""
    if (text := os.environ.get("EMOJI_OUT")) is None:
        return ROOT / "outputs"
    if not text.strip():
        fail("EMOJI_OUT is set but empty - unset it, or set it to the folder for the outputs.", 2)
    path = Path(os.path.abspath(os.path.expanduser(text.strip())))
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir():
        fail(f"EMOJI_OUT={text}: {existing} is a file, not a folder - point EMOJI_OUT at a folder.", 2)
    return path


OUT = _out_dir()
DATASET_DIR = OUT / "dataset"
ADAPTER_DIR = OUT / "adapters"
GENERATIONS = OUT / "generations.jsonl"
CHATGPT_ANSWERS = OUT / "chatgpt.jsonl"
REPORT = OUT / "report.md"
LOSS_PLOT = OUT / "loss.png"
EXPORT_DIR = OUT / "export"
# The de-quantised embedded model, shared by every EMOJI_OUT (the tests use their own outputs, not their own copy).
CACHE_DIR = Path(os.path.expanduser(os.environ.get("EMOJI_CACHE") or ROOT / "outputs" / "cache"))


def render(name, /, **context):
    """A Jinja2 template of lib/templates/ filled from `context`. A template line that starts with spaces continues the
    line above, so that templates can wrap the long paragraphs that the outputs keep on one line each."""
    import jinja2

    def fold(file):
        return re.sub(r"\n +", " ", (ROOT / "lib" / "templates" / file).read_text(encoding="utf-8"))

    env = jinja2.Environment(loader=jinja2.FunctionLoader(fold), trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.get_template(name).render(**context)


def adapter_path(epochs):
    return ADAPTER_DIR / f"epochs{epochs}"


def display(path):
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def require(path, script):
    """One line naming the script to run first when an input is missing."""
    if not Path(path).exists():
        fail(f"{display(path)} not found - run `python {script}` first.")


# ---------------------------------------------------------------- writing
def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(OSError):
            path.unlink(missing_ok=True)


@contextmanager
def atomic(path):
    """Yield a temporary path beside `path` (a file or a folder: write either there); when the block ends without
    error it replaces `path` in one rename. Anything else removes it and leaves `path` as it was. The temporary name
    is per process, so two runs at once never share one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove(tmp)
        yield tmp
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        if tmp.is_dir() and path.exists():  # a folder can't be renamed onto another: move the old one aside first
            path.replace(old)
        tmp.replace(path)
        _remove(old)
    except OSError as error:
        fail(f"cannot write {display(path)} ({error.strerror or error}) - free some space or choose another "
             "EMOJI_OUT; the previous file, if any, is unchanged.")
    finally:
        _remove(tmp)


def write_text(path, text):
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj):
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_jsonl(path, rows):
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def append_jsonl(path, rows):
    """Append rows, each flushed to disk. A torn last line (a writer killed mid-line) is cut off first, and a whole
    last row missing its newline gets one, so the next row never fuses with it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+b") as f:
            f.seek(0)
            data = f.read()
            if data and not data.endswith(b"\n"):
                start = data.rfind(b"\n") + 1
                try:
                    json.loads(data[start:])
                    f.write(b"\n")
                except ValueError:
                    f.truncate(start)
            f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        fail(f"cannot write {display(path)} ({error.strerror or error}); the rows written before are kept.")


# ---------------------------------------------------------------- reading
def read_json(path, script):
    """The JSON object in `path`; one line naming the file and the script that makes it when it is missing (run it) or
    damaged (run it with --force)."""
    require(path, script)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        problem = None if isinstance(data, dict) else "not a JSON object"
    except (OSError, ValueError) as error:  # a UnicodeDecodeError is a ValueError
        problem = getattr(error, "strerror", None) or type(error).__name__
    if problem:
        redo(path, f"is damaged ({problem})", script)
    return data


def read_jsonl(path, required=()):
    """The rows of a JSONL file ([] when there is none); never writes. A torn last line (an interrupted append) is
    skipped with one warning; any other bad line, or a row without a `required` field, is one line FILE:LINE and
    exit."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as error:
        fail(f"{display(path)} cannot be read ({error.strerror or error}).")
    rows = []
    for n, line in ((n, line) for n, line in enumerate(lines, 1) if line.strip()):
        try:
            row = json.loads(line.decode("utf-8"))
            missing = [k for k in required if k not in row] if isinstance(row, dict) else None
            problem = "not a JSON object" if missing is None else missing and f"the row has no {', '.join(missing)}"
        except UnicodeDecodeError:
            problem = "not UTF-8 text"
        except ValueError as error:
            problem = f"not valid JSON ({type(error).__name__})"
        if problem and n == len(lines):  # the last line, with no newline after it: a torn append
            print(f"warning: {display(path)}:{n}: skipped a torn last line (an interrupted write); the next "
                  "write removes it.", file=sys.stderr)
            break
        if problem:
            fail(f"{display(path)}:{n}: {problem} - fix or delete that line, or delete the file to start over.")
        rows.append(row)
    return rows


def latest_answers(rows):
    """One row per prompt of an append-only answers file: its last successful answer, else its last failure."""
    best = {}
    for row in rows:
        if row.get("status") == "ok" or best.get(row.get("prompt"), {}).get("status") != "ok":
            best[row.get("prompt")] = row
    return best


# ---------------------------------------------------------------- provenance
def fingerprint(*parts):
    """A short, stable hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make_stamp(settings, inputs, folder=None, skip=()):
    """What an output records about how it was made: the resolved settings, its inputs' fingerprints, and the size of
    every file in `folder` (minus `skip`) that the stamp vouches for."""
    files = {str(f.relative_to(folder)): f.stat().st_size for f in sorted(Path(folder).rglob("*"))
             if f.is_file() and f.name not in skip} if folder else {}
    return {"fingerprint": fingerprint(settings, inputs), "settings": settings, "inputs": inputs, "files": files}


def read_stamp(path, key=None):
    """The stamp in a JSON file (under `key`, e.g. run.json's "stamp"), or None when it is missing, damaged, or a file
    it vouches for is gone or has another size (a partial copy or sync): then the output is made again."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        stamp = data[key] if key else data
        folder = Path(path).parent
        whole = all((folder / name).is_file() and (folder / name).stat().st_size == size
                    for name, size in stamp.get("files", {}).items())
        return stamp if whole and isinstance(stamp["fingerprint"], str) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def is_current(path, stamp, key=None):
    """The one caching rule: an output is up to date when its recorded stamp is whole and has this fingerprint."""
    return (read_stamp(path, key) or {}).get("fingerprint") == stamp["fingerprint"]


# ---------------------------------------------------------------- one run at a time
_locks = []


def lock(step):
    """Hold a lock on this step's outputs until the script ends; a second copy of the step on the same EMOJI_OUT stops
    with one line. The lock file lives in the system's temporary folder: nothing is written to EMOJI_OUT by it."""
    handle = open(Path(tempfile.gettempdir()) / f"emoji-{fingerprint(str(OUT))}-{step}.lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"another {step} is running on {display(OUT)} - wait for it to finish, then run this again.")
    _locks.append(handle)
