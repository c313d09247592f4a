"""Example Conduit policy in Python: reports deal codes (`DEAL-` + 4 digits) as `entity.deal`.

Build it into a WebAssembly component with componentize-py (PyPI), from the repository root:

    pip install componentize-py==0.25.1
    componentize-py -d wit -w policy componentize -p examples/python-policy app -o deal-codes.wasm

then sign it (`conduit policy sign deal-codes.wasm --key org.key`) and drop both files into the
gateway's policy directory. `docs/writing-policies.md` walks through it.
"""

import json
import re

from componentize_py_types import Err
from wit_world import WitWorld
from wit_world.imports import host, types

_PATTERN = re.compile(r"\bDEAL-(\d{4})\b")
_settings = {"category": "entity.deal"}


class WitWorld(WitWorld):
    def describe(self) -> types.Description:
        return types.Description(name="deal-codes", version="0.1.0", categories=["entity.deal"])

    def configure(self, config: str) -> None:
        try:
            parsed = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"deal-codes: the configuration is not JSON: {e}")
        category = parsed.get("category", "entity.deal")
        if not category.startswith("entity."):
            raise Err(f"deal-codes: category {category!r} must start with 'entity.'")
        _settings["category"] = category
        host.log(host.Level.DEBUG, "deal-codes configured")

    def evaluate(self, info: types.RequestInfo, segments: list) -> types.Verdict:
        findings = []
        for index, segment in enumerate(segments):
            for match in _PATTERN.finditer(segment.text):
                # Spans are byte offsets into the UTF-8 text, not character offsets.
                start = len(segment.text[: match.start()].encode("utf-8"))
                end = start + len(match.group(0).encode("utf-8"))
                findings.append(
                    types.Finding(
                        category=_settings["category"],
                        rule_id="deal-code",
                        segment=index,
                        start=start,
                        end=end,
                        severity=types.Severity.HIGH,
                    )
                )
        return types.Verdict(findings=findings, deny=None)
