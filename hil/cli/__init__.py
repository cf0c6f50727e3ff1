"""The ``hil`` command: one entry point, one module per subcommand, one error path.

Every expected failure (bad input, a device fault, an I/O error, a saturated capture) ends in one
line ``error: ...`` naming the problem and exit status 2 (:func:`main`); anything else is a bug
and keeps its traceback. ``-v`` shows slmsuite's start-up messages and the traceback of expected
errors too.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings

import typer

from hil.cli import benchmark, calibrate, capture, check, demo, deploy, finetune, live, reconstruct, train

app = typer.Typer(
    name="hil",
    help="Hardware-in-the-loop single-snapshot phase retrieval (simulated bench by default).",
    no_args_is_help=True,
    add_completion=False,
)
app.command("demo")(demo.demo)
app.add_typer(benchmark.app, name="benchmark")
app.command("train")(train.train)
app.command("check")(check.check)
app.command("deploy")(deploy.deploy)
app.command("capture")(capture.capture)
app.command("reconstruct")(reconstruct.reconstruct)
app.add_typer(calibrate.app, name="calibrate")
app.command("finetune")(finetune.finetune)
app.command("live")(live.live)

_verbose = False


@app.callback()
def _options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library start-up messages and tracebacks."),
) -> None:
    """Hardware-in-the-loop single-snapshot phase retrieval (simulated bench by default)."""
    global _verbose
    _verbose = verbose
    quiet_libraries(verbose)


def quiet_libraries(verbose: bool) -> None:
    """slmsuite's INFO lines ("Initialized ...") and its cupy warning only with ``-v``."""
    import slmsuite

    warnings.filterwarnings("default" if verbose else "ignore", message="cupy is not installed")
    slmsuite.configure_logging(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("slmsuite").setLevel(logging.DEBUG)  # slmsuite's own default; its handler filters


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that are the user's or the bench's problem, not a bug.

    ``ValueError`` covers ``ConfigError``, ``BundleError``, ``CaptureError`` and ``LimitError``;
    ``OSError`` covers missing files, permissions, full disks and serial ports. Classes of modules
    that were never imported cannot have been raised, so they are looked up lazily.
    """
    errors: list[type[BaseException]] = [ValueError, OSError, EOFError]
    for module, name in (("drivers.errors", "DeviceError"), ("hil.bench.capture", "SaturationError")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            errors.append(getattr(loaded, name))
    return tuple(errors)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its class name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    """Entry point (``argv`` defaults to the command line); always ends in ``SystemExit``: expected
    errors print one line and exit 2, usage errors exit 2 through typer."""
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit gives OSError (EFBIG), never a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        app(args=argv)
    except Exception as exc:
        if not isinstance(exc, expected_errors()):
            raise
        if _verbose:
            import traceback

            traceback.print_exc()
        try:
            print(f"error: {one_line(exc)}", file=sys.stderr)
        except OSError:  # the terminal is gone (SIGHUP): the exit status still tells
            pass
        sys.exit(2)
