"""The corpus under tests/config/corpus: valid/NAME.cf with NAME.json (expected effective model)
and optional NAME.err (expected warnings); invalid/NAME.cf with NAME.err (expected errors).

In the expected files ``{file}`` stands for the path given on the command line,
``{hostname}`` for this host's name and ``{digest}`` for the sha256 of the file."""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    valid: bool

    def expected_err(self, shown_path: str) -> list[str]:
        err = self.path.with_suffix(".err")
        if not err.exists():
            return []
        text = err.read_text(encoding="utf-8").replace("{file}", shown_path)
        return text.splitlines()

    def expected_json(self, shown_path: str) -> Any:
        text = self.path.with_suffix(".json").read_text(encoding="utf-8")
        text = text.replace("{file}", shown_path).replace("{hostname}", socket.gethostname())
        data = json.loads(text)
        data["digest"] = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return data


def cases() -> list[Case]:
    found = [Case(p.stem, p, True) for p in sorted((CORPUS / "valid").glob("*.cf"))]
    found += [Case(p.stem, p, False) for p in sorted((CORPUS / "invalid").glob("*.cf"))]
    return found
