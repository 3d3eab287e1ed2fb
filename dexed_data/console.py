"""What both command lines (``dexed-data``, ``preset-model``) do around their typer app: :func:`run`.

* **Expected errors** (``DexedDataError``, ``PresetModelError``) become one ``error: ...`` line and
  exit status 2.
* **Signals.** Ctrl-C (SIGINT), SIGTERM (``kill``, ``timeout``, a batch system's time limit) and
  SIGHUP (a closed terminal), unless ignored when the command starts (``nohup``), all stop the
  command the same way: as an interrupt in the main
  process, so every file being written is left unpublished (``dexed_data.outputs``), locks are
  released and worker processes are stopped. One line says so and how to continue; the exit
  status is 128 + the signal's number (130, 143, 129).
* **Standard streams that are closed** (``>&-``, ``2>&-``, a daemon) are reopened on
  ``/dev/null``, and a reader that goes away (``| head -1``) silences the rest of the output
  instead of ending the command: a command's product is its files, not its messages.
* **A current folder that no longer exists** is named, instead of a traceback from whatever
  first asks for it (worker processes, relative paths).

Progress bars of every command come from :func:`progress`: a live bar on a terminal, and on
anything else (``2> render.log``, ``nohup``, a batch system's log) one plain line every
:data:`LOG_INTERVAL` seconds and at the end, instead of a bar redrawn ten times a second with
carriage returns into one ever-growing line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from pathlib import Path

__all__ = ["progress", "run"]

#: Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL = 30.0

_SIGNALS = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "stopped by SIGTERM",
            signal.SIGHUP: "stopped by SIGHUP (the terminal closed)"}
#: The signal that stopped this command, if any.
_stopped_by: list[int] = []


#: Depth of :func:`interrupts_deferred` blocks, and whether an interrupt waits for their end.
_deferring = [0]
_deferred: list[int] = []


def _on_signal(signum, frame) -> None:
    if not _stopped_by:
        _stopped_by.append(signum)
        threading.excepthook = _quiet_after_interrupt(threading.excepthook)
        sys.unraisablehook = _interrupt_again(sys.unraisablehook)
    if _deferring[0]:
        _deferred.append(signum)
        return
    if _importing(frame):    # raised into a module's import, the interrupt can abort the process (below)
        threading.Thread(target=_raise_later, args=(signum, 0.1), name="interrupt-again", daemon=True).start()
        return
    raise KeyboardInterrupt


def _importing(frame) -> bool:
    """Whether ``frame`` runs inside an ``import``. Torch calls back into Python from C++ while it
    imports (pybind11), and an interrupt raised there cannot unwind: C++ terminates the process
    (SIGABRT, a core and 170 lines; seen once in ~90 signals to ``interpolate``). The interrupt is
    raised a moment later instead, outside the import (imports take a second or two)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def interrupts_deferred():
    """Hold back the interrupt of a signal (Ctrl-C, SIGTERM, SIGHUP) that arrives inside this block
    until the block ends, for a step that must not stop half-way: one that sets up objects whose
    clean-up assumes they are whole (a data loader starting its worker processes). Blocking the
    signals (``pthread_sigmask``) is not enough for that: another thread of the process can take
    the signal, and Python then runs the handler in the main thread anyway."""
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
        if not _deferring[0] and _deferred and sys.exc_info()[1] is None:
            _deferred.clear()
            raise KeyboardInterrupt


def interrupt_waiting() -> bool:
    """Whether a signal has come inside an :func:`interrupts_deferred` block and waits for its end."""
    return bool(_deferred)


def outputs_published() -> None:
    """Say that the command's outputs are whole and published: a signal from now on changes nothing,
    so it is ignored while the command tidies up and exits (as once it has returned: :func:`run`),
    and one held back by :func:`interrupts_deferred` is dropped. A render signalled in the second
    after it published its file said "interrupted … run the same command again" (exit 130) and left
    its work folder half removed. Nothing is changed when the command line did not set the handlers
    (a library call)."""
    if _installed:
        for signum in _found:
            if signal.getsignal(signum) is _on_signal:
                signal.signal(signum, signal.SIG_IGN)
    _deferred.clear()


def _interrupt_again(hook):
    """``sys.unraisablehook`` once the command is stopped. Python runs a signal's handler wherever the
    main thread is, and where that is a weakref callback or a ``__del__`` method (torch's data loader
    and h5py run many), the interrupt it raises cannot be passed on: Python printed "Exception
    ignored in …" and the command ran on as if no signal had come (``fit --workers 2`` trained on
    after a SIGTERM, about one signal in thirty). Such an interrupt is raised again, a moment later,
    from outside the callback; other unraisable exceptions are shown as before."""

    def again(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt) or not _stopped_by:
            hook(unraisable)
            return
        signum = _stopped_by[0]
        threading.Thread(target=_raise_later, args=(signum,), name="interrupt-again", daemon=True).start()
    return again


def _raise_later(signum: int, after: float = 0.02) -> None:
    import time

    time.sleep(after)                   # the callback has returned: the handler runs in the main code
    if signal.getsignal(signum) is _on_signal:     # not once the command is unwinding (run's finally)
        signal.raise_signal(signum)


class _QuietWhenGone:
    """A text stream that turns into /dev/null once its reader has gone (EPIPE; EIO from a
    terminal that was closed). Any other failure to write (a full disk under ``> report.txt``)
    is kept in :attr:`failed`: the command then ends with an error (:func:`_check_written`)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.failed: OSError | None = None

    def _gone(self, exc: OSError) -> None:
        if exc.errno not in (errno.EPIPE, errno.EIO) and self.failed is None:
            self.failed = exc
        self._stream = open(os.devnull, "w")

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._gone(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._gone(exc)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _Lines:
    """The file a progress bar draws into when stderr is not a terminal: every redraw (a carriage
    return, the bar's text, padding) becomes one line of its own; clearing redraws are dropped."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._last = ""

    def write(self, text: str) -> int:
        for part in text.replace("\r", "\n").split("\n"):
            part = part.rstrip()
            if part.strip() and part != self._last:     # closing redraws the last state again
                self._stream.write(part + "\n")
                self._last = part
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def one_line(text) -> str:
    """``text`` on one line: its control characters (a file name may hold a newline) escaped
    (``\\n``, ``\\x0b``) as ``list`` and ``info`` write such names, so that an error stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def progress(enabled: bool = True, **kwargs):
    """A tqdm progress bar on stderr (``kwargs`` are tqdm's): drawn live on a terminal; anywhere
    else written as a plain line when it starts, every :data:`LOG_INTERVAL` seconds and when it
    closes; nothing when not ``enabled``."""
    from tqdm import tqdm

    stream = sys.stderr
    if not enabled or stream is None:
        return tqdm(disable=True, **kwargs)
    if _is_terminal(stream):
        return tqdm(file=stream, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs["leave"] = True            # a log shows how far each bar got
    return tqdm(file=_Lines(stream), mininterval=LOG_INTERVAL, **kwargs)   # no width: never cut


def _usable_streams() -> None:
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                continue
            null = os.open(os.devnull, mode)     # the lowest free descriptor: fd itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if getattr(sys, name) is None:           # Python found the descriptor closed at start-up
            setattr(sys, name, open(fd, "w", closefd=False))
        setattr(sys, name, _QuietWhenGone(getattr(sys, name)))


def _check_written() -> None:
    """Exit 2 with one line if the command's standard output could not be written (a full disk
    under ``> file``): the command's result is not where its user will look for it."""
    out = sys.stdout
    if isinstance(out, _QuietWhenGone):
        out.flush()
        if out.failed is not None:
            from .outputs import failure_reason

            print(f"error: the command's output could not be written to its standard output "
                  f"({failure_reason(out.failed)}); it is incomplete or missing", file=sys.stderr)
            sys.exit(2)


def run(app, errors: tuple[type[BaseException], ...]) -> None:
    """Run a typer ``app`` as a command line, with the policies of the module docstring."""
    _usable_streams()
    try:
        os.getcwd()
    except FileNotFoundError:
        print("error: the current folder no longer exists (it was deleted or moved while this shell was "
              "in it); cd to an existing folder and run the command again", file=sys.stderr)
        sys.exit(2)
    _one_line_usage_errors()
    repeated = repeated_option(app, sys.argv[1:])
    if repeated is not None:
        print(f"error: {one_line(repeated)}", file=sys.stderr)
        sys.exit(2)
    found = _install()
    done = False
    try:
        app()
        done = True
        _check_written()
    except errors as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        # a path that cannot be looked at, met before the checks that name it (A12, R15: Path.is_dir raises for
        # a file in a folder that cannot be entered, or a name too long); the commands' clean-up has run by now
        if exc.filename is None:
            if isinstance(exc, PermissionError):   # (R16: was one line before the clause took every OSError)
                print(f"error: {exc.strerror or str(exc) or 'permission denied'}; check the permissions of the files and folders involved",
                      file=sys.stderr)
                sys.exit(2)
            raise
        from .inputs import lookup_failure

        print(f"error: {exc.filename}: {lookup_failure(exc)}", file=sys.stderr)
        sys.exit(2)
    except MemoryError:   # (its frames, and what they held, are gone by now)
        _out_of_memory()
    except RuntimeError as exc:
        # torch's words for it: its CPU allocator's, CUDA's (its own type, or its error text), and oneDNN's
        # when a convolution cannot get its working memory (fit under a 840 MB limit); not oneDNN's
        # "could not create a primitive descriptor …", which is about shapes (R6)
        text = str(exc).strip()
        if type(exc).__name__ != "OutOfMemoryError" and "can't allocate memory" not in text \
                and "CUDA error: out of memory" not in text and not text.endswith("could not create a primitive"):
            raise
        _out_of_memory()
    except KeyboardInterrupt:   # raised outside typer's main, while it builds the command from its options
        if not _stopped_by:
            raise
        _said_stopped()
    except SystemExit as exc:
        if _stopped_by and exc.code not in (0, None):   # typer turns the interrupt into exit 130 (older: 1)
            _said_stopped()
        done = exc.code in (0, None)
        if done:
            _check_written()
        raise
    finally:
        # a second signal while cleaning up after a failure or an interrupt ends the process; once the
        # command has finished, its files are whole and the process only exits: a signal then changes
        # nothing (it killed the process without a word, or printed a traceback from an exit handler,
        # and the outputs it had published made the same command, run again, refuse)
        for signum in found:
            signal.signal(signum, signal.SIG_IGN if done else signal.SIG_DFL)
        if "dexed_data.render" in sys.modules:
            sys.modules["dexed_data.render"].shutdown_workers()
        if not done:
            for signum, handler in found.items():     # as found
                signal.signal(signum, handler)
        _installed.clear()


def _one_line_usage_errors() -> None:
    """Have typer print a command line it cannot parse as :func:`_usage_error` does, not as a box.
    Its ``rich_utils`` (and rich, ~8 MB) is imported only when an error or the help is printed: imported
    at start, it left too little memory under a tight ``ulimit -v`` for render to say so in one line."""
    import importlib.abc
    import importlib.util

    module = sys.modules.get("typer.rich_utils")
    if module is not None:
        module.rich_format_error = _usage_error
        return

    class Patched(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "typer.rich_utils":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            load = spec.loader.exec_module

            def exec_module(module) -> None:
                load(module)
                module.rich_format_error = _usage_error

            spec.loader.exec_module = exec_module
            return spec

    if not any(type(f).__name__ == "Patched" for f in sys.meta_path):
        sys.meta_path.insert(0, Patched())


#: What to change when a command runs out of memory (its own options only); any other: free memory.
_LESS_MEMORY = {"render": "use fewer --jobs", "fit": "use a smaller --batch-size or fewer --workers, or --from-disk",
                "evaluate": "use fewer --jobs", "match": "use fewer --jobs"}


def _out_of_memory() -> None:
    """One line for a command that ran out of memory, and exit status 2."""
    command = _command()
    advice = _LESS_MEMORY.get(command.split()[-1], "give it a smaller input")
    print(f"error: out of memory: {command} needed more memory than the system could give (no file was left "
          f"half-written); close other programs or {advice}, and run it again", file=sys.stderr)
    sys.exit(2)


def _command() -> str:
    """The command as its user would name it: ``dexed-data render``, ``python -m preset_model fit``."""
    prog = Path(sys.argv[0]).name
    prog = f"python -m {Path(sys.argv[0]).parent.name}" if prog == "__main__.py" else prog
    return " ".join([prog, *[w for w in sys.argv[1:2] if not w.startswith("-")]])


def _usage_error(exc) -> None:
    """A command line typer cannot parse (``--limit abc``, an unknown option, a missing argument):
    one ``error:`` line naming the option and where the options are listed, instead of a box."""
    if type(exc).__name__ == "NoArgsIsHelpError":   # no arguments: typer has printed the help (as its own does)
        return
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        path = ctx.command_path
    else:   # (an option missing its value has no context: the command line names it)
        path = _command()
    print(f"error: {one_line(exc.format_message()).rstrip('.')} (see `{path} --help`)", file=sys.stderr)


def repeated_option(app, args: list[str]) -> str | None:
    """What is wrong when ``args`` (a command line of ``app``) gives one of its command's one-value
    options twice, else None: typer keeps the last value and drops the first without a word
    (``render --notes 40:85 --notes 60:85`` rendered 60:85 alone, ``-o a.h5 -o b.h5`` wrote b.h5)."""
    import typer.main

    command = getattr(typer.main.get_command(app), "commands", {}).get(args[0]) if args else None
    if command is None or "--help" in args[1:(args.index("--") if "--" in args else None)]:   # the help is asked for
        return None
    options = {name: p for p in command.params if getattr(p, "param_type_name", "") == "option"
               for name in (*p.opts, *p.secondary_opts)}
    given: dict[str, list[str]] = {}
    words = iter(args[1:])
    for word in words:
        if word == "--":
            break
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if not word.startswith("--") and len(word) > 2 and word[:2] in options:   # glued: -ob.h5, -j2 (R1)
            name, equals, value = word[:2], "=", word[2:]
        p = options.get(name)
        if p is None or p.is_flag or p.count:
            continue
        if not equals:
            value = next(words, "")
        if not p.multiple:
            given.setdefault(p.name, []).append(f"{name} {value}")
    for uses in given.values():
        if len(uses) > 1:
            return (f"{uses[0].split(' ')[0]} was given {len(uses)} times ({', '.join(uses)}); a command takes it once, "
                    "and would have used the last alone: give it once")
    return None


#: The handlers :func:`_install` replaced (signal → handler), while a command runs.
_found: dict = {}
_installed: list[bool] = []


def _install() -> dict:
    """Set :func:`_on_signal` for the signals a process group gets, unless this command has already
    (its entry point does it first thing) or the signal is ignored (``nohup``, a script's ``cmd &``:
    an ignored signal stays ignored). Returns the handlers replaced."""
    if not _installed:
        _stopped_by.clear()
        _deferred.clear()
        _found.clear()
        for signum in _SIGNALS:
            if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
                _found[signum] = signal.signal(signum, _on_signal)
        _installed.append(True)
    return _found


def cli_path(value) -> Path:
    """A path given on the command line, refused when empty: ``-o ""`` (an unset shell variable)
    became ``Path(".")``, and ``export-wav`` then wrote into the current folder."""
    import typer

    if isinstance(value, Path):
        return value
    if value == "":   # one line, as every other refused value (not typer's usage box)
        typer.echo('error: an empty path ("") was given for a file or folder (an unset shell variable?); '
                   "give its name", err=True)
        raise typer.Exit(2)
    return Path(value)


def cli_file_path(example: str):
    """The parser of a file to write given on the command line: as :func:`cli_path`, and refused
    when it ends with a slash (``-o out/`` names a folder; ``Path`` drops the slash, and a file
    named ``out`` was written). ``example``: a file name the message suggests (``presets.h5``)."""
    def parse(value) -> Path:
        import typer

        if isinstance(value, str) and value.endswith(("/", os.sep)):
            typer.echo(one_line(f"error: {value} ends with '/', so it names a folder, but a file is written there; "
                                f"give a file name (e.g. {value}{example})"), err=True)
            raise typer.Exit(2)
        return cli_path(value)

    return parse


def dexed_data_main() -> None:
    """The ``dexed-data`` command (:func:`_main_of`)."""
    _main_of("dexed_data.cli")


def preset_model_main() -> None:
    """The ``preset-model`` command (:func:`_main_of`)."""
    _main_of("preset_model.cli")


def _main_of(module: str) -> None:
    """Run ``module``'s ``main()`` with the signal handlers set before it is imported: the command
    line modules take a few tenths of a second to import (typer, numpy), and a signal in that
    window printed a traceback (Ctrl-C) or ended the process without a word (SIGTERM, SIGHUP)."""
    import importlib

    _install()
    try:
        importlib.import_module(module).main()
    except KeyboardInterrupt:   # after the import, before the command's own handling of it
        if not _stopped_by:
            raise
        _said_stopped()


def _said_stopped() -> None:
    """The one line of an interrupted command, and its exit (128 + the signal's number)."""
    signum = _stopped_by[0]
    print(f"error: {_SIGNALS[signum]}{_after_interrupt(sys.argv[1] if len(sys.argv) > 1 else '')}", file=sys.stderr)
    sys.exit(128 + signum)


#: Commands that write no file: an interrupt leaves nothing to say about files.
_READ_ONLY = {"info", "list", "check-plugin"}


def _after_interrupt(command: str) -> str:
    """What an interrupted ``command`` left and how to continue (the rest of its one line)."""
    if command in _READ_ONLY:
        return "; nothing was written"
    if command == "render":
        return "; files not finished were not written. Run the same command again to continue: it resumes its job"
    if command == "fit":
        out = _option("--out")
        if out is not None and not os.path.exists(os.path.join(out, "last.pt")):
            return "; no epoch was finished, so there is nothing to resume: run the same command again"
        if "--resume" in sys.argv:
            return "; files not finished were not written. Run the same command again to continue from the last epoch"
        return "; files not finished were not written. Add --resume to the same command to continue from the last epoch"
    if command == "match" and _searched():
        return ("; no voice was written (a match writes its voices together, at the end). Run the same command "
                "again to continue: the sounds searched so far (if any) are kept beside its output and reused")
    if command == "match":
        return ("; nothing was written (a match writes its voices together, at the end), and the same command run "
                "again matches every sound again")
    if command == "evaluate" and _searched():
        return ("; files not finished were not written. Run the same command again to continue: the presets "
                "refined so far (if any) are kept beside its output and reused")
    return "; files not finished were not written. Run the same command again"


def _searched() -> bool:
    """Whether this command line runs a re-render search (``--refine N``, N > 0: ``00`` is none)."""
    try:
        return int(_option("--refine") or 0) > 0
    except ValueError:
        return False


def _option(name: str) -> str | None:
    """The value of option ``name`` on this command line (``--out X`` or ``--out=X``), if given."""
    args = sys.argv[1:]
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1:]
    return None


def _quiet_after_interrupt(hook):
    """``threading.excepthook`` once the command is stopped: the threads that serve worker processes
    trip over workers that are being stopped, and that is not news. Loky's manager thread (the work
    items of killed workers); multiprocessing's resource sharer, through which torch's data-loading
    workers hand over their batches (a connection reset mid-handshake: seen once in ~20 signals to a
    ``fit --workers 2``). Other threads' exceptions are shown as before."""
    import traceback

    def quiet(args) -> None:
        if args.thread is not None and args.thread.name == "ExecutorManagerThread":
            return
        frames = traceback.extract_tb(args.exc_traceback) if args.exc_traceback is not None else []
        if isinstance(args.exc_value, OSError) and any(f.filename.endswith("resource_sharer.py") for f in frames):
            return
        hook(args)
    return quiet
