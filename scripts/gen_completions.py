"""Write completions/carbonrun.bash, _carbonrun (zsh) and carbonrun.fish from the CLI.

They are the scripts click itself emits for `_CARBONRUN_COMPLETE=<shell>_source carbonrun`, committed
so packagers can install them without running carbonrun at build time. tests/test_completions.py
fails when they are stale; regenerate with:

    python scripts/gen_completions.py            # write the files
    python scripts/gen_completions.py --check    # exit 1 when a file differs
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
FILES = {"bash": "carbonrun.bash", "zsh": "_carbonrun", "fish": "carbonrun.fish"}
PROG = "carbonrun"
COMPLETE_VAR = "_CARBONRUN_COMPLETE"


def render(shell: str) -> str:
    """What `_CARBONRUN_COMPLETE=<shell>_source carbonrun` prints, byte for byte (this checkout's code)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_CARBONRUN", "CARBONRUN_"))}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               **{COMPLETE_VAR: f"{shell}_source"})
    proc = subprocess.run([sys.executable, "-m", PROG], env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"{COMPLETE_VAR}={shell}_source failed: {proc.stderr.strip()}")
    return proc.stdout


def expected() -> Dict[Path, str]:
    return {ROOT / "completions" / name: render(shell) for shell, name in FILES.items()}


def stale(files: Dict[Path, str]) -> List[Path]:
    return [p for p, text in files.items() if not p.is_file() or p.read_text() != text]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args(argv)
    files = expected()
    if args.check:
        bad = stale(files)
        for p in bad:
            print(f"stale: {p.relative_to(ROOT)} (run python scripts/gen_completions.py)", file=sys.stderr)
        return 1 if bad else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
