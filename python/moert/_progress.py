"""Text progress bars for moert.load() and Model.to().

The runtime reports progress as (stage, done, total) calls, stage by stage
("read", "build", "prepare"), done and total counting bytes of weights and
done rising from 0 to total in each stage.  A bar draws one line per stage on
stderr: with tqdm when it is installed, else a plain one-line bar.
"""

import sys


def _stderr_is_tty():
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def resolve(progress):
    """The callable that `progress` (as given to load/to) stands for, or None.

    None: a bar when stderr is a terminal, else nothing; True: a bar; False:
    nothing; a callable: itself, called as progress(stage, done, total).
    """
    if progress is None:
        return make_bar() if _stderr_is_tty() else None
    if progress is True:
        return make_bar()
    if progress is False:
        return None
    if callable(progress):
        return progress
    raise TypeError("progress must be True, False, None or a callable (stage, done, total), "
                    f"got {type(progress).__name__}")


def close(callback):
    """Ends the bar's open line, if `callback` is one of ours (after an error
    the last stage never reached its total)."""
    end = getattr(callback, "close", None)
    if isinstance(callback, (PlainBar, TqdmBar)) and end is not None:
        end()


def make_bar(stream=None, use_tqdm=None):
    """A bar on `stream` (stderr by default): tqdm's when it is importable (or
    `use_tqdm` is True), else PlainBar."""
    if use_tqdm is None or use_tqdm:
        try:
            import tqdm  # type: ignore  # noqa: F401  (optional)
            return TqdmBar(stream)
        except ImportError:
            if use_tqdm:
                raise
    return PlainBar(stream)


def _mb(n):
    return f"{n / 1e6:.1f}"


class PlainBar:
    """One line per stage, redrawn in place with a carriage return:

        read     [##########          ]  50%  12.3/24.6 MB
    """

    WIDTH = 24

    def __init__(self, stream=None):
        self.stream = stream
        self.stage = None
        self.shown = None  # what the open line shows: (stage, percent)

    def _out(self):
        return self.stream if self.stream is not None else sys.stderr

    def __call__(self, stage, done, total):
        if stage != self.stage:
            self.close()
            self.stage = stage
        frac = min(1.0, done / total) if total > 0 else 1.0
        percent = int(frac * 100)
        if (stage, percent) == self.shown:
            return
        filled = int(frac * self.WIDTH)
        out = self._out()
        out.write(f"\r{stage:<8} [{'#' * filled}{' ' * (self.WIDTH - filled)}] {percent:3d}%  "
                  f"{_mb(done)}/{_mb(total)} MB")
        self.shown = (stage, percent)
        if done >= total:
            out.write("\n")
            self.shown = None
            self.stage = None
        out.flush()

    def close(self):
        if self.shown is not None:
            out = self._out()
            out.write("\n")
            out.flush()
        self.shown = None
        self.stage = None


class TqdmBar:
    """The same with one tqdm bar per stage (bytes, scaled units)."""

    def __init__(self, stream=None):
        import tqdm  # type: ignore  # optional
        self._tqdm = tqdm.tqdm
        self.stream = stream
        self.stage = None
        self.bar = None

    def __call__(self, stage, done, total):
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = self._tqdm(total=total, desc=f"{stage:<8}", unit="B", unit_scale=True,
                                  file=self.stream if self.stream is not None else sys.stderr,
                                  leave=True, dynamic_ncols=True)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.bar = None
        self.stage = None
