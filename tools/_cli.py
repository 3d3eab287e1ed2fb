"""What the tools/ scripts share when run from the command line: the toolkit's errors as one line.

A wrong input (a missing corpus, a dataset given for a catalogue, a plug-in that does not load)
ends a script with ``error: …`` and exit status 2, as the toolkit's own commands do, not with a
traceback; a command a script runs that fails has already printed its own error line.
"""
from __future__ import annotations

import subprocess
import sys


def fail(message: str) -> None:
    """One ``error: …`` line on stderr and exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def stop_on_sigterm() -> None:
    """SIGTERM (``timeout``, a batch system) ends this process as an exception does, so that ``finally``
    blocks and ``atexit`` handlers remove its temporary folders (the default action ended it at once)."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def at_least(args, **minimums: int) -> None:
    """``fail`` unless each named option of the parsed ``args`` is at least its minimum (``--sounds 0`` printed a
    table of NaN, ``--steps -1`` a traceback)."""
    for name, low in minimums.items():
        value = getattr(args, name)
        if value is not None and value < low:
            fail(f"--{name.replace('_', '-')} {value}: must be at least {low}")


def run_main(main, *args) -> None:
    """Run ``main(*args)``; exit with its return value, or 2 after one ``error:`` line."""
    from dexed_data.errors import DexedDataError
    from preset_model.errors import PresetModelError

    try:
        sys.exit(main(*args))
    except (DexedDataError, PresetModelError, FileExistsError, FileNotFoundError, PermissionError) as exc:
        said = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else str(exc)
        fail(said)
    except subprocess.CalledProcessError as exc:   # the command printed its own error above
        cmd = [str(c) for c in exc.cmd] if isinstance(exc.cmd, (list, tuple)) else [str(exc.cmd)]
        start = cmd.index("-m") + 1 if "-m" in cmd else 0   # `python -m dexed_data …`: from the module on
        shown = " ".join([cmd[start].split("/")[-1], *cmd[start + 1:start + 5]])
        fail(f"`{shown} …` failed (exit {exc.returncode}); its message is above")
    except RuntimeError as exc:   # DawDreamer's "Unable to load plugin." and the like
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:   # Ctrl-C: one line, as the toolkit's commands say it (R14: a 15-line traceback)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
