"""The one policy for every file a command writes (``dexed-data`` and ``preset-model`` alike).

1. **Atomic.** A file is written to a hidden temporary file beside its target
   (``.NAME.PID.tmp``), flushed, ``fsync``'d and renamed over the target, then the folder is
   ``fsync``'d. The target is whole or absent; a file it replaces stays intact until the new one
   is complete. On any error (a full disk included) the temporary file is removed.
2. **Never an input.** An output that is the same file as one of the command's inputs is refused,
   even with ``--force`` (same inode, or the same resolved path for a file not yet written).
3. **No silent overwrite.** An existing output is refused unless ``force=True`` (``--force``),
   always with the same words: ``X already exists; pass --force to replace it``. (``render``
   keeps its own rule: rerunning the same command finishes or reuses its own file.)
4. **Folders.** Missing parent folders are created. A target that is a folder, a path below a
   regular file, or a folder that cannot be written (read-only or virtual file system such as
   ``/proc``) is refused before any work is done, with one line naming the path.
5. **Two commands, one output.** A file checked here is published only if it is still what the
   check saw: absent (then it is created with a hard link, which fails if another command created
   it first) or the same file. Otherwise this command fails with one line and the other's file is
   kept, so of two commands writing one output, one succeeds and the other says so; neither
   reports a success whose result was lost. Temporary files of killed commands
   (``.NAME.PID.tmp`` of a process that no longer runs) are removed by the next check of that
   file, or of their folder (every such file of the same kind of output, e.g. ``.wav``) for a
   command that writes into a folder. "No longer runs" is judged on this machine: two machines
   writing into one folder of a shared file system at once are not supported.
6. **A command's files together.** A command that writes several files (a catalogue and its
   report, a voice and its re-renders, a folder of WAVs) writes them inside :func:`together`:
   each is finished in its temporary file, and none is renamed into place until all are, so a
   failure or an interrupt half-way leaves none of them, nor the folders made for them (and its
   message's "nothing was written" is true of the whole command). A file written twice in the
   block is published once, with its last content. A rename that fails half-way (a target that
   cannot be replaced, e.g. immutable) has the renames before it undone: each file it replaced is
   put back from a hard link made before the first rename (``.NAME.PID.old.tmp``), each file it
   created is removed. The renames are journalled: a command killed
   (``kill -9``, a power cut) between two of them leaves ``.together.PID.journal`` in each folder
   of its files (whose clean-up then keeps the temporary files it needs), and the next command
   that checks one of its files (the same command run again) finishes them first
   (:func:`finish_killed_publishes`) and says so, so its files still appear all together, never
   some of them; killed before the first rename, it published nothing.

Example::

    >>> from dexed_data.outputs import check_output, write_bytes
    >>> target = check_output("/tmp/doc_outputs.bin", force=True)
    >>> write_bytes(target, b"abc")
    >>> open(target, "rb").read()
    b'abc'
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import OutputError

#: Outputs checked in this process (resolved path → what was there then: its identity, or None),
#: so that publishing can tell whether another command wrote the file in the meantime (rule 5).
_CHECKED: dict[str, tuple | None] = {}
#: Files finished inside :func:`together` and not yet published: resolved temporary file →
#: (temporary file, target), in the order written.
_PENDING: dict[str, tuple[Path, Path]] | None = None


def file_identity(path: str | os.PathLike) -> tuple | None:
    """(device, inode, mtime, size) of ``path``: changes when the file is written or replaced; None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


#: The one wording of rule 3, shared by every command.
EXISTS = "{path} already exists; pass --force to replace it (or choose another output)"
#: Rule 3 when the check has just finished a killed run's publish (rule 6).
_FINISHED = ("{path} already exists: a run of this command was killed while it put its files in place, and the "
             "{n} it had left are now there too, so that run's output is complete; pass --force to make it again")


def h5_text(text: str) -> str:
    """``text`` as HDF5 can store it: a file name's bytes that are not UTF-8 (which Python keeps as
    surrogates, ``os.fsdecode``) become ``\\xNN`` escapes; other text is unchanged.

    >>> h5_text("x\\udcff.syx")
    'x\\\\xff.syx'
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


#: Longest output file name (bytes) whose temporary name (:func:`temp_path`, a pid of up to 7
#: digits) fits the usual 255-byte limit of a name.
MAX_NAME_BYTES = 255 - len("..1234567.tmp")


#: Suffixes of audio files.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")

#: Suffixes of the toolkit's other files and of audio: a SysEx bank written under one is a mistake.
NOT_SYX_SUFFIXES = (".h5", ".hdf5", ".pt", ".json", ".csv", ".html", ".md", *AUDIO_SUFFIXES)


def not_a_syx_name(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a name to write DX7 SysEx under (``export -o``, ``interpolate -o``), or None:
    another kind's suffix (A9: ``export -o x.h5`` wrote a bank there), or a name that reads back as a
    voice of a bank (``c.syx:1`` is voice 1 of ``c.syx`` to every command that reads voices)."""
    name = Path(path).name
    voice = re.search(r".:(\d+)$", name)   # (":1" names no bank)
    bank = Path(path).with_name(name[:voice.start() + 1]) if voice else None
    if voice and bank.is_file():   # (with no such file, reading the name back finds this one: R13)
        return (f"{bank.name} is a file, so {name} also reads as voice {voice[1]} of it (and once written, as this "
                "file instead); give a name without :N")
    suffix = Path(name).suffix.lower()
    if suffix in NOT_SYX_SUFFIXES:
        return f"the voices are written as DX7 SysEx; give a .syx name, not a {suffix} one"
    return None


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary file beside ``path`` that :func:`atomic_path` writes first."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):   # RuntimeError: a loop of links (Python ≤ 3.12's resolve)
        return False


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or str(exc)


def failure_reason(exc: BaseException) -> str:
    """One line saying why a write failed: the system's words for an ``OSError`` ("Operation not
    permitted", not "[Errno 1] … '.x.h5.12.tmp' -> 'x.h5'"), "no space left on the device" however
    HDF5 words a full disk, else the exception's first line."""
    from .inputs import first_line

    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return _reason(exc)
    if "errno = 28" in str(exc) or "No space left" in str(exc):
        return "no space left on the device"
    return first_line(exc)


def _check_parent(path: Path, what: str, shown: Path | None = None) -> Path:
    """The deepest existing ancestor of ``path`` must be a writable folder (messages name ``shown``,
    default ``path``); returns it."""
    shown = path if shown is None else shown
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():   # a dangling link: mkdir would fail later
            break
        ancestor = ancestor.parent
    if ancestor.is_symlink() and not ancestor.exists():
        raise OutputError(f"cannot write {what} {shown}: {ancestor} is a broken link (to {os.readlink(ancestor)}); "
                          "remove it or choose another output")
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {what} {shown}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {shown}: the folder {ancestor} is not writable")
    return ancestor


def render_holding(path: str | os.PathLike) -> int | None:
    """The pid of a ``dexed-data render`` that holds ``path``'s job lock (``.NAME.lock`` beside it,
    ``flock``) right now, read from ``/proc/locks`` without taking the lock; None when none does
    (or the system has no ``/proc/locks``)."""
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(real.with_name(f".{real.name}.lock"))
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:            # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (waiters: "1: -> FLOCK …")
        f = line.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[5] == want and f[4].isdigit():
            return int(f[4])
    return None


def check_outputs(paths: Iterable[str | os.PathLike], *, inputs: Iterable[str | os.PathLike] = (), force: bool = False,
                  what: str = "output", family: Callable[[str], object] | None = None) -> list[Path]:
    """:func:`check_output` for each of many files (``export``'s numbered files), each folder scanned
    once for what a killed command left there, not once per file (audit A6: 16,000 files exported
    over an earlier export took 12 minutes, 40 times a fresh export). ``family``: the names whose
    temporary files a killed run left are removed (default: ``paths``' own)."""
    paths = [Path(p) for p in paths]
    inputs = list(inputs)
    finished: dict[str, list[Path]] = {}   # each target → what the killed publish that wrote it put in place
    finish_killed_publishes([p for p in paths if p.parent.is_dir()], finished)
    out = [check_output(p, inputs=inputs, force=force, what=what, _finished=finished) for p in paths]
    names: dict[Path, set[str]] = {}
    for p in paths:
        names.setdefault(p.parent, set()).add(p.name)
    for folder, mine in names.items():
        if folder.is_dir():
            _remove_stale_temps(folder, lambda name: name in mine or (family is not None and family(name)))
    return out


def check_output(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (), force: bool = False,
                 what: str = "output", rendering_ok: bool = False, leftovers: Iterable[str | os.PathLike] = (),
                 _finished: dict[str, list[Path]] | None = None) -> Path:
    """Check rules 2–4 for the file ``path`` before any work; returns it as a :class:`Path`.

    Args:
        path: the file the command will write.
        inputs: files the command reads (an output may not be one of them).
        force: replace an existing file (``--force``).
        what: how messages name the file (``"output"``, ``"report"``, ...).
        rendering_ok: do not refuse a file a render is writing (``render`` itself, which takes
            the lock and says so in its own words).
        leftovers: the command's own files that a run killed while publishing ``path`` leaves
            beside it (its journal, its ``.NAME.lock``): removed when this check completes that
            publish, as that run would have (a lock only when no process holds it).

    Raises:
        OutputError: one line saying what is wrong and what to do.
    """
    from .inputs import unreachable

    path = Path(path)
    why = unreachable(path)
    if why is not None:
        raise OutputError(f"cannot write {what} {path}: {why}")
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{what} {path} is a broken link (to {os.readlink(path)}); remove it or choose another output")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise OutputError(f"{what} {path} is also an input of this command ({source}); "
                              "write to another file")
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    if _finished is not None:   # (check_outputs: settled for all of its files at once)
        finished = _finished.get(os.path.realpath(path), [])
    else:
        finished = finish_killed_publishes([path]) if path.parent.is_dir() else []
    holder = None if rendering_ok else render_holding(path)
    if holder is not None and holder != os.getpid():   # found now, not after this command's work
        raise OutputError(f"{what} {path} is being written by another command (pid {holder}: a render, or an "
                          "evaluate or match with --refine); wait for it to finish (or stop it), or choose another "
                          "output")
    if path.exists() or path.is_symlink():
        if not force and finished:
            _remove_leftovers(leftovers)   # audit A2: they stayed for good (nothing would run that command again)
            raise OutputError(_FINISHED.format(path=path, n=len(finished)))
        if not force:
            raise OutputError(EXISTS.format(path=path))
        if not path.is_file():
            raise OutputError(f"{what} {path} exists and is not a regular file; choose another output")
    _check_parent(path, what)
    if path.parent.is_dir():   # a probe: a virtual file system (/proc) or a full quota says no here
        _probe(temp_path(path), f"{what} {path}", path.name)
        if _finished is None:
            _remove_stale_temps(path.parent, lambda name: name == path.name)
    elif len(os.fsencode(path.name)) > MAX_NAME_BYTES:   # said before its folders are made, not after
        raise OutputError(_too_long(f"{what} {path}", path.name))
    _CHECKED[os.path.realpath(path)] = file_identity(path)
    return path


def _remove_leftovers(paths: Iterable[str | os.PathLike]) -> None:
    """Remove what a finished run would have: its lock files and its journal, only while no process
    holds one of those locks (a running command of the same output owns the journal: R1)."""
    import fcntl

    paths = [Path(p) for p in paths]
    held = []
    try:
        for p in (p for p in paths if p.name.endswith(".lock")):
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            held.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # BlockingIOError when a process holds it: keep all
        for p in paths:
            p.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        for fd in held:
            os.close(fd)


def _too_long(shown: str, name: str) -> str:
    return (f"cannot write {shown}: its name ({len(os.fsencode(name))} bytes) is too long for the temporary file "
            f"written first beside it (.NAME.PID.tmp); use a name of at most {MAX_NAME_BYTES} bytes")


def _probe(probe: Path, shown: str, name: str | None = None) -> None:
    """Make and remove the file ``probe`` in an existing folder: a virtual file system (/proc), a
    read-only mount or a full quota refuses here, before the command's work, not after it
    (``shown``: the output as messages name it; ``name``: its file name, for a name too long)."""
    try:
        with open(probe, "xb"):
            pass
    except FileExistsError:
        return
    except OSError as exc:
        if exc.errno == errno.ENOENT:   # the folder exists, yet no file can be made in it: /proc said so
            raise OutputError(f"cannot write {shown}: the folder {probe.parent} takes no new files (a "
                              "virtual file system such as /proc?); choose a folder on a disk") from None
        if exc.errno == errno.ENAMETOOLONG and name is not None:   # the name fits, the temporary name does not
            raise OutputError(_too_long(shown, name)) from None
        raise OutputError(f"cannot write {shown}: {_reason(exc)}") from None
    probe.unlink(missing_ok=True)


def check_folder(folder: str | os.PathLike, names: Iterable[str] = (), *, force: bool = False,
                 inputs: Iterable[str | os.PathLike] = (), what: str = "output folder") -> Path:
    """Check an output folder and the files ``names`` to be written in it (rules 2–4 for each file).

    The folder may exist (its other files are left alone) or not (it is created when written).
    """
    from .inputs import unreachable

    folder = Path(folder)
    names = list(names)
    why = unreachable(folder)
    if why is not None:
        raise OutputError(f"cannot write to {what} {folder}: {why}")
    for source in inputs:
        for n in names:
            if source is not None and _same_file(folder / n, Path(source)):
                raise OutputError(f"{folder / n} would replace an input of this command ({source}); "
                                  "write to another folder")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file; give a folder")
    finished = finish_killed_publishes(folder / n for n in names) if folder.is_dir() else []
    where = folder
    if not folder.exists():
        where = _check_parent(folder / "x", what, folder)   # the folder is made: its deepest existing ancestor
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {what} {folder}: not writable")
    _probe(where / f".probe.{os.getpid()}.tmp", f"to {what} {folder}")
    folders = [n for n in names if (folder / n).is_dir()]
    if folders:   # not even with --force: a folder is not a file to replace
        raise OutputError(f"{folder / folders[0]} is a folder where this command writes a file; move it away or "
                          f"choose another {what}")
    if not force:
        taken = [n for n in names if (folder / n).exists()]
        if taken and finished:
            raise OutputError(_FINISHED.format(path=folder / taken[0], n=len(finished)))
        if taken:
            more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
            raise OutputError(EXISTS.format(path=folder / taken[0]) + more)
    if folder.is_dir():   # a killed command's of the same kind, whatever files it was writing
        kinds = {Path(n).suffix.lower() for n in names if Path(n).suffix}
        _remove_stale_temps(folder, lambda name: Path(name).suffix.lower() in kinds)
    for n in names:
        _CHECKED[os.path.realpath(folder / n)] = file_identity(folder / n)
    return folder


#: Folders :func:`make_parents` created inside :func:`together` (removed again if the block fails).
_MADE: list[Path] = []


def make_parents(path: str | os.PathLike) -> None:
    """Create the missing folders above ``path`` (rule 4); a clean :class:`OutputError` if impossible."""
    parent = Path(path).parent
    missing = []
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if _PENDING is not None:
            _MADE.extend(reversed(missing))
    except OSError as exc:
        raise OutputError(f"cannot create the folder {Path(path).parent}: {_reason(exc)}") from None


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a closed file (or a folder's entries) to the disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """``fsync`` the finished ``tmp``, rename it to ``path`` and ``fsync`` the folder (rule 1);
    for a file checked by :func:`check_output` or :func:`check_folder`, only if no other command
    wrote it since (rule 5)."""
    fsync_path(tmp)
    _rename_checked(tmp, path)
    with contextlib.suppress(OSError):   # some file systems cannot fsync a folder; the rename is done
        fsync_path(Path(path).parent)


class OutputClash(OutputError):
    """Another command wrote one of this command's outputs while it ran (rule 5); that file is kept."""


def _clash(path: str | os.PathLike, was_absent: bool) -> OutputError:
    if was_absent:
        return OutputClash(f"{path} was written by another command while this one ran; that file is kept "
                           "(rerun this command with --force to replace it)")
    return OutputClash(f"{path} was replaced by another command while this one ran; that file is kept "
                       "(rerun this command to replace it)")


def _taken(path: str | os.PathLike) -> OutputError | None:
    """Rule 5's verdict on publishing ``path`` now: None, or the error saying another command wrote it."""
    seen = _CHECKED.get(os.path.realpath(path), False)
    if seen is False:
        return None
    if seen is None:
        return _clash(path, True) if os.path.lexists(path) else None
    return _clash(path, False) if file_identity(path) != seen else None


def _rename_checked(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename ``tmp`` to ``path`` (rule 5 for a checked file)."""
    key = os.path.realpath(path)
    if key not in _CHECKED:
        os.replace(tmp, path)
        return
    if _CHECKED[key] is None:
        try:
            os.link(tmp, path)             # atomic: fails if the file appeared since the check
        except FileExistsError:
            raise _clash(path, True) from None
        except OSError:                    # a file system without hard links
            if os.path.lexists(path):
                raise _clash(path, True) from None
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
    else:
        with _folder_locked(Path(path).parent):   # the check and the replace as one step (audit A1)
            clash = _taken(path)
            if clash is not None:
                raise clash
            os.replace(tmp, path)
    _CHECKED[key] = file_identity(path)


@contextlib.contextmanager
def _folder_locked(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` while a checked file in it is replaced: two commands
    replacing one file (``--force``) both passed the check, then each replaced it, and both said they
    had written it (one result lost). Where the folder cannot be locked, the replace goes on unlocked."""
    import fcntl

    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def together(last: bool = False) -> Iterator[None]:
    """Publish the files written inside this block (:func:`atomic_path`, :func:`write_bytes`, ...)
    only when the whole block succeeds (rule 6).

    Each file is written and ``fsync``'d in its temporary file as usual; the renames wait for the
    end of the block. Before the first rename, every target is checked again (rule 5), so a clash
    with another command still publishes nothing. If the block raises (or is interrupted), every
    temporary file is removed and no target changes. Blocks do not nest: an inner block joins
    the outer one.

    A signal (Ctrl-C, SIGTERM, SIGHUP) that comes while the files are renamed is held back until
    the renames already made are undone, then stops the command: it left part of an export's
    files, said none was written, and its rerun was refused (audit Z13). ``last``: these are the
    command's last writes, so once they are published a signal changes nothing
    (:func:`~dexed_data.console.outputs_published`): it said "interrupted" after an export
    had written every bank, and the rerun it advised was refused.

    Example::

        >>> with together():
        ...     write_text("/tmp/doc_together_a.txt", "a")
        ...     write_text("/tmp/doc_together_b.txt", "b")   # both appear here, or neither
    """
    global _PENDING
    if _PENDING is not None:       # joined the enclosing block
        yield
        return
    _PENDING = batch = {}
    try:
        yield
        _PENDING = None
        pending = list(batch.values())
        clash = next((e for e in map(_taken, (path for _, path in pending)) if e is not None), None)
        if clash is not None:
            raise clash
        from .console import interrupt_waiting, interrupts_deferred, outputs_published

        done, journals, backups, lost = 0, [], [], 0
        with interrupts_deferred():      # raises the interrupt held back, if any, at its end
            try:
                journals = _write_journal(pending) if len(pending) > 1 else []
                backups = _back_up(pending) if len(pending) > 1 else [(True, None)] * len(pending)
                for tmp, path in pending:
                    if interrupt_waiting():
                        break
                    _rename_checked(tmp, path)
                    done += 1
                if done < len(pending):   # stopped: all or none (rule 6), and none is what the message says
                    _drop_journal(journals)   # first: killed while rolling back, no rerun takes the rest as whole
                    lost = done - _roll_back(pending[:done], backups)
            except (OSError, OutputError) as exc:
                _drop_journal(journals)
                undone = _roll_back(pending[:done], backups)
                why = f"cannot write {pending[done][1]}: {_reason(exc)}" if isinstance(exc, OSError) else str(exc)
                if undone == done:
                    raise OutputError(f"{why}; none of this command's {len(pending)} files was written"
                                      + (" (the ones already in place were put back as they were)" if done else "")
                                      ) from None
                raise OutputError(f"{why}; {done - undone} of this command's {len(pending)} files were written "
                                  f"before it and could not be put back (the first: {pending[0][1]})") from None
            except BaseException:         # an interrupt not held back (a library call: Python's own handler)
                # raised as the rename it came in returns: that file is in place too (its temporary is gone)
                if done < len(pending) and backups and not os.path.lexists(pending[done][0]):
                    done += 1
                _drop_journal(journals)
                _roll_back(pending[:done], backups)
                raise
            finally:
                for _, backup in backups:
                    if backup is not None:
                        with contextlib.suppress(OSError):
                            backup.unlink()
            if lost:   # a replaced file without a backup (no hard links there): said as it is, not "not written"
                raise OutputError(f"interrupted while its {len(pending)} files were put in place; {lost} of them "
                                  f"were written and could not be put back (the first: {pending[0][1]})")
            if done == len(pending):      # all published (a signal during the last rename comes after it)
                for folder in {Path(path).parent for _, path in pending}:
                    with contextlib.suppress(OSError):
                        fsync_path(folder)
                _drop_journal(journals)
                if last:
                    outputs_published()
    finally:
        _PENDING = None
        for tmp, _ in batch.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        made, _MADE[:] = list(_MADE), []
        for folder in reversed(made):          # the folders made for the files, when none was published
            with contextlib.suppress(OSError):
                folder.rmdir()                 # only if empty


def _back_up(pending: list[tuple[Path, Path]]) -> list[tuple[bool, Path | None]]:
    """Per target: whether it exists, and a hard link to it (``.NAME.PID.old.tmp``; None where none
    can be made), so that a publish failing half-way (a target that cannot be replaced: immutable,
    a folder put there since the check...) can put back the files it already replaced."""
    backups: list[tuple[bool, Path | None]] = []
    for _, path in pending:
        path = Path(path)
        if not os.path.lexists(path):
            backups.append((False, None))
            continue
        backup = path.with_name(f".{path.name}.{os.getpid()}.old.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                backup.unlink()
            os.link(path, backup, follow_symlinks=False)
        except OSError:
            backup = None
        backups.append((True, backup))
    return backups


def _roll_back(published: list[tuple[Path, Path]], backups: list[tuple[bool, Path | None]]) -> int:
    """Undo the renames of ``published`` (newest first): a replaced file comes back from its backup,
    a file this command created is removed. Returns how many were undone."""
    undone = 0
    for (_, path), (existed, backup) in reversed(list(zip(published, backups))):
        key = os.path.realpath(path)
        seen = _CHECKED.get(key)          # what this command published there (None: a path it did not check)
        try:
            if seen not in (None, file_identity(path)):
                continue                  # another command wrote it since (audit Z20: its file was replaced)
            if backup is not None:
                os.replace(backup, path)
            elif not existed:
                os.unlink(path)
            else:
                continue
        except OSError:
            continue
        _CHECKED[key] = file_identity(path)
        undone += 1
    return undone


_JOURNAL_NAME = re.compile(r"\.together\.(\d{1,9})\.journal(\.tmp)?")


def _place(path: str | os.PathLike) -> Path:
    """``path`` with its folder resolved (links followed) and its own name kept: where a rename onto it lands."""
    path = Path(path)
    return Path(os.path.realpath(path.parent)) / path.name


def _write_journal(pending: list[tuple[Path, Path]]) -> list[Path]:
    """Record the renames :func:`together` is about to make, whole (written, ``fsync``'d, renamed)
    before the first of them, in every folder they go to: each target's path relative to that
    folder and its identity when it was checked (its temporary file is ``.NAME.PID.tmp`` beside
    it). Returns the journals written; none when one cannot be: the renames go ahead unjournalled."""
    targets = [_place(path) for _, path in pending]
    written: list[Path] = []
    for folder in dict.fromkeys(t.parent for t in targets):
        journal = folder / f".together.{os.getpid()}.journal"
        tmp = journal.with_name(journal.name + ".tmp")
        entries = [[os.path.relpath(t, folder), _CHECKED.get(os.path.realpath(path), False)]
                   for t, (_, path) in zip(targets, pending)]
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(entries))   # ensure_ascii: a name's undecodable bytes survive
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, journal)
            with contextlib.suppress(OSError):
                fsync_path(folder)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            _drop_journal(written)
            return []
        written.append(journal)
    return written


def _drop_journal(journals: list[Path]) -> None:
    """The publish ended (or failed and was reported to the user): nothing is to be finished later."""
    for journal in journals:
        with contextlib.suppress(OSError):
            journal.unlink()


def _journals(folder: Path) -> Iterator[tuple[Path, list[tuple[Path, Path, object]]]]:
    """The journals in ``folder`` left by this user's processes that no longer run, each as
    ``(journal, [(temporary file, target, identity when checked), ...])``. A journal's leftover
    ``.tmp`` (killed while writing it: nothing was renamed) is removed. A journal that is not
    ours or cannot be read is skipped (never acted on); its temporary files are ``.NAME.PID.tmp``
    beside its targets, whatever it says."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _JOURNAL_NAME.fullmatch(entry.name)
            if not m or int(m[1]) == os.getpid() or _alive(int(m[1])):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != os.getuid() or not entry.is_file(follow_symlinks=False):
                    continue
                text = Path(entry.path).read_text()
                if m[2]:                      # a journal half-written by a killed command, nothing renamed
                    if not text or text.startswith('[["'):
                        os.unlink(entry.path)
                    continue
                listed = json.loads(text)
                entries = []
                for target, seen in listed:
                    os.fsencode(target)       # a name the system cannot take (NUL, a lone surrogate): skipped
                    if "\0" in target:
                        raise ValueError(target)
                    path = _place(os.path.join(folder, target))
                    was = None if seen is None else False if seen is False else tuple(seen)
                    entries.append((path.with_name(f".{path.name}.{m[1]}.tmp"), path, was))
            except (OSError, ValueError, TypeError, UnicodeError):
                continue
            yield Path(entry.path), entries


def _placed(targets: Iterable[str | os.PathLike]) -> set[Path]:
    """``targets`` with their folders resolved (each folder once): where their renames land."""
    targets = [Path(t) for t in targets]
    folders = {parent: Path(os.path.realpath(parent)) for parent in {t.parent for t in targets}}
    return {folders[t.parent] / t.name for t in targets}


def killed_publish_pending(targets: Iterable[str | os.PathLike]) -> bool:
    """Whether a killed command's publish that wrote one of ``targets`` is still to be settled by
    :func:`finish_killed_publishes` (another process of the same job waits for it: ``preset-model
    fit`` under torchrun). Journals about other files of the folder (a killed ``evaluate`` writing
    its report in the run folder) do not count: nothing here settles them."""
    wanted = _placed(targets)
    return any(wanted & {path for _, path, _ in entries}
               for folder in {t.parent for t in wanted} for _, entries in _journals(folder))


def _published(tmp: Path, target: Path) -> bool:
    """Whether the rename of ``tmp`` onto ``target`` happened (a hard link made and not yet unlinked counts)."""
    if not tmp.is_file() or tmp.is_symlink():
        return True
    try:
        return os.path.samefile(tmp, target)
    except OSError:
        return False


def finish_killed_publishes(targets: Iterable[str | os.PathLike], settled: dict | None = None) -> list[Path]:
    """Settle the publish of a command killed inside :func:`together` that wrote one of ``targets``
    (the files a command is about to write: the same command run again, or any command writing
    one of those files), before they are checked. Returns the files it put in place.

    If none of its renames happened, its temporary files are removed (as if it had been
    interrupted before publishing). Otherwise its other files are renamed into place too, so its
    files appear together, each unless its target changed since that command checked it (another
    command wrote it: that file is kept and the temporary file removed). ``settled`` (if given)
    gets, for each (real) path a settled publish wrote, the files that publish put in place.
    """
    wanted = _placed(targets)
    finished: list[Path] = []
    for folder in {t.parent for t in wanted}:
        for journal, entries in _journals(folder):
            if not wanted & {path for _, path, _ in entries}:
                continue
            done = [_published(tmp, path) for tmp, path, _ in entries]
            before = len(finished)
            for (tmp, path, was), published in zip(entries, done):
                if published:
                    with contextlib.suppress(OSError):
                        if tmp.is_file() and not tmp.is_symlink():
                            tmp.unlink()              # a hard link whose unlink the kill prevented
                    continue
                with contextlib.suppress(OSError):
                    if any(done) and (was is False or file_identity(path) == was):
                        os.replace(tmp, path)
                        finished.append(path)
                    else:
                        tmp.unlink()
            if settled is not None:
                for _, path, _ in entries:
                    settled[os.path.realpath(path)] = finished[before:]
            pid = _JOURNAL_NAME.fullmatch(journal.name)[1]
            for _, path, _ in entries:              # its backups of the files it replaced (hard links: kept
                with contextlib.suppress(OSError):  # the old contents, hidden, until a --force rerun)
                    path.with_name(f".{path.name}.{pid}.old.tmp").unlink()
            for parent in {path.parent for _, path, _ in entries}:
                with contextlib.suppress(OSError):
                    fsync_path(parent)
                with contextlib.suppress(OSError):   # its copies in the other folders
                    (parent / journal.name).unlink()
    return finished


def _pending_temps(folder: Path) -> set[str]:
    """Names of the temporary files in ``folder`` that a killed command's journal still needs (each
    folder of its files holds a copy of its journal)."""
    folder = Path(os.path.realpath(folder))
    return {tmp.name for _, entries in _journals(folder) for tmp, _, _ in entries if tmp.parent == folder}


#: ``.NAME.PID.tmp``; ``.old.tmp``: a publish's backup; ``.tmp.tmp``: the file a merge's ``.NAME.PID.tmp``
#: is made in (:func:`dexed_data.writer.create_layout`), as large as the dataset.
_TEMP_NAME = re.compile(r"\.(.+)\.(\d{1,9})(?:\.old|\.tmp)?\.tmp")


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Remove every temporary file (``.NAME.PID.tmp``) that a killed process left in ``folder``, a
    folder one command owns (``preset-model fit``'s run folder: a ``kill -9`` while it saved a
    checkpoint left the partial checkpoint, up to 500 MB, for ever)."""
    _remove_stale_temps(Path(folder), lambda name: True)


def _remove_stale_temps(folder: Path, ours) -> None:
    """Remove the ``.NAME.PID.tmp`` files in ``folder`` whose NAME ``ours(NAME)`` accepts, left by
    a process that no longer runs (killed). For one file, NAME is that file's; for a command
    writing into a folder, any NAME of its kind of output (``export-wav`` killed half-way leaves
    one per WAV, kept until its last file is done, and a rerun with other ids writes other names).
    Other files are left alone."""
    needed = _pending_temps(folder)   # a killed publish's files, finished by the next check of their targets
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _TEMP_NAME.fullmatch(entry.name)
            if (m and ours(m[1]) and int(m[2]) != os.getpid() and not _alive(int(m[2]))
                    and entry.is_file(follow_symlinks=False) and entry.name not in needed):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs here (a number no process can have counts as running: not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):      # no such pid possible; or it exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str = "output", parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it becomes ``path``.

    Any exception inside the block (or while publishing) removes the temporary file and leaves
    ``path`` as it was; an ``OSError`` (disk full, ...) becomes an :class:`OutputError`.

    Example::

        >>> with atomic_path("/tmp/doc_outputs.txt") as tmp:
        ...     _ = tmp.write_text("whole or nothing")
    """
    path = Path(path)
    if parents:   # (not for a file in a folder that must still be there: a render's segment)
        make_parents(path)
    tmp = temp_path(path)
    staged = False
    try:
        yield tmp
        if _PENDING is None:
            publish(tmp, path)
        else:                          # inside together(): finished now, renamed at the end of the block
            fsync_path(tmp)
            _PENDING.setdefault(os.path.realpath(tmp), (tmp, path))   # written again: the last write wins
            staged = True
    except OSError as exc:
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        if _PENDING is not None:
            # (fit publishes each epoch's files together: the earlier epochs' files stay as they were)
            kept = "none of the files written with it was put in place, and the files already there are unchanged"
        raise OutputError(f"cannot write {what} {path}: {_reason(exc)}; {kept}") from None
    finally:
        if not staged:
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, what: str = "output", parents: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (rule 1); ``parents``: make its missing folders."""
    with atomic_path(path, what, parents) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path: str | os.PathLike, text: str, what: str = "output") -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (rule 1). A file name's bytes that are not UTF-8
    (a report naming such a file) are written as ``\\xNN`` escapes, as :func:`h5_text` stores them."""
    write_bytes(path, h5_text(text).encode("utf-8"), what)
