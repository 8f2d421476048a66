"""The live table, pinned at the bottom of the terminal below the child's own output.

The terminal's scroll region (DECSTBM) is set to the rows above the table, so whatever the child
writes scrolls there and never over the table; the table is redrawn outside the region between a
cursor save and restore, in one write() so the tty applies it whole.
"""
from __future__ import annotations

import os
from typing import IO, Any, Dict, List, Optional

from carbonrun.report import text as tx, units
from carbonrun.cli.render import color_enabled

ESC = "\x1b"


class LiveTable:
    def __init__(self, stream: IO[str], color: Optional[bool] = None) -> None:
        self.out = stream
        self.color = color_enabled(stream) if color is None else color
        self.size = (0, 0)
        self.height = 0
        self._prev: Dict[str, float] = {}
        self._prev_t = 0.0
        self._watts: Dict[str, float] = {}
        self._started = False

    def _style(self, text: str, code: str) -> str:
        return f"{ESC}[{code}m{text}{ESC}[0m" if self.color else text

    def _size(self) -> "tuple[int, int]":
        """The terminal's own size (a stale COLUMNS in the environment must not win), else 80x24."""
        try:
            size = os.get_terminal_size(self.out.fileno())
            return size.columns, size.lines
        except (OSError, ValueError, AttributeError):
            return 80, 24

    def _write(self, s: str) -> None:
        try:
            os.write(self.out.fileno(), s.encode())
        except OSError:
            pass

    def start(self, session: Any) -> None:
        self.rows = len({(m.component, m.device) for m in session.meters}) + 3
        self._setup()
        self._started = True

    def _setup(self) -> None:
        cols, lines = self._size()
        self.size = (cols, lines)
        self.height = min(self.rows, max(0, lines // 3))
        if self.height < 2:
            self.height = 0
            return
        h = self.height
        # Make room, then confine scrolling to the rows above the table.
        self._write("\n" * h + f"{ESC}[{h}A{ESC}7{ESC}[1;{lines - h}r{ESC}8")

    def draw(self, session: Any) -> None:
        if not self._started:
            return
        if self._size() != self.size:
            self._clear()
            self._setup()
        if not self.height:
            return
        cols, lines = self.size
        body = self._lines(session, cols)[: self.height]
        top = lines - self.height + 1
        parts = [f"{ESC}7"]
        for i, text in enumerate(body):
            parts.append(f"{ESC}[{top + i};1H{ESC}[2K{text}")
        parts.append(f"{ESC}8")
        self._write("".join(parts))

    def _lines(self, session: Any, cols: int) -> List[str]:
        """Title rule, header and one row per meter, fitted to `cols`: columns go before figures are cut."""
        acct = session.acct
        t = session.elapsed
        dt = t - self._prev_t
        rows = []
        for m, mj, jj in zip(acct.meters, acct.machine_j, acct.job_j):
            key = f"{m.component}:{m.device}"
            if dt > 0:
                self._watts[key] = (mj - self._prev.get(key, 0.0)) / dt
            self._prev[key] = mj
            est, d = (units.ESTIMATE, 2) if m.estimated else ("", 4)
            name = m.component if m.device in ("", m.component) else f"{m.component} {m.device}"
            # device names come from sysfs and drivers: shown, never obeyed
            rows.append([tx.printable(name), est + units.watts(self._watts.get(key, 0.0), min(d, 3)),
                         est + units.joules(jj, d),
                         est + units.joules(mj, d)])
        self._prev_t = t
        table = tx.table(["", "power", "job", "machine"], rows, cols, right=(1, 2, 3), drop=(3,), gap=2)
        est, d = (units.ESTIMATE, 2) if any(m.estimated for m in acct.meters if m.counted) else ("", 4)
        parts = [f"carbonrun {units.duration(t)}", f"{est}{units.energy(acct.total_kwh(), d)}",
                 f"{est}{units.mass(acct.kg, d)} CO2eq", f"{session.outcome.samples} samples"]
        while len(parts) > 1 and len(" · ".join(parts)) + 4 > cols:
            parts.pop()  # the sample count goes first, then emissions: the title never cuts a figure
        title = "── " + " · ".join(parts) + " "
        rule = self._style(title + "─" * max(0, cols - len(title)), "2")
        return [rule, self._style(table[0], "1")] + table[1:] + [""]

    def _clear(self) -> None:
        if not self.height:
            return
        cols, lines = self.size
        top = lines - self.height + 1
        clear = "".join(f"{ESC}[{top + i};1H{ESC}[2K" for i in range(self.height))
        self._write(f"{ESC}7{clear}{ESC}[r{ESC}8")

    def stop(self) -> None:
        if self._started:
            self._clear()
            self._started = False
