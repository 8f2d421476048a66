"""The live table, pinned at the bottom of the terminal below the child's own output.

The terminal's scroll region (DECSTBM) is set to the rows above the table, so whatever the child
writes scrolls there and never over the table; the table is redrawn outside the region between a
cursor save and restore, in one write() so the tty applies it whole.
"""
from __future__ import annotations

import os
import shutil
from typing import IO, Dict, List, Optional

from carbonrun.report import units

ESC = "\x1b"


class LiveTable:
    def __init__(self, stream: IO[str], color: Optional[bool] = None) -> None:
        from carbonrun.cli.render import color_enabled

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

    def _write(self, s: str) -> None:
        try:
            os.write(self.out.fileno(), s.encode())
        except OSError:
            pass

    def start(self, session) -> None:
        self.rows = len({(m.component, m.device) for m in session.meters}) + 3
        self._setup()
        self._started = True

    def _setup(self) -> None:
        cols, lines = shutil.get_terminal_size((80, 24))
        self.size = (cols, lines)
        self.height = min(self.rows, max(0, lines // 3))
        if self.height < 2:
            self.height = 0
            return
        h = self.height
        # Make room, then confine scrolling to the rows above the table.
        self._write("\n" * h + f"{ESC}[{h}A{ESC}7{ESC}[1;{lines - h}r{ESC}8")

    def draw(self, session) -> None:
        if not self._started:
            return
        if shutil.get_terminal_size((80, 24)) != self.size:
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

    def _lines(self, session, cols: int) -> List[str]:
        acct = session.acct
        t = session.elapsed
        dt = t - self._prev_t
        rows = []
        for m, mj, jj in zip(acct.meters, acct.machine_j, acct.job_j):
            key = f"{m.component}:{m.device}"
            if dt > 0:
                self._watts[key] = (mj - self._prev.get(key, 0.0)) / dt
            self._prev[key] = mj
            est = "~" if m.estimated else " "
            rows.append(f" {m.component:<5} {m.device[:12]:<12} {est}{self._watts.get(key, 0.0):8.1f} W"
                        f" {units.joules(mj):>13} {units.joules(jj):>13}")
        self._prev_t = t
        head = (f" {'':<5} {'device':<12}  {'power':>8}   {'machine':>13} {'job':>13}")
        title = (f"carbonrun {units.duration(t)} · {session.outcome.samples} samples · "
                 f"{units.energy(acct.total_kwh())} · {units.mass(acct.kg)} CO2eq")
        rule = self._style(("── " + title + " ").ljust(cols, "─")[:cols], "2")
        return [rule, self._style(head[:cols], "1")] + [r[:cols] for r in rows] + [""]

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
