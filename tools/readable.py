"""Location tokens written out for people: `cat at (29, 39)-(264, 156) px` (with an en dash).

The served endpoint returns PaliGemma's answer as it is (`<loc0123>` tokens included:
clients that parse need them, and vLLM stays vLLM). For text-only chat front ends,
where `<loc..>` reads as noise or disappears as an unknown HTML tag, this renders an
answer readable, in pixels of the image. See docs/chat-apps.md.
"""

from __future__ import annotations

from tools.models import LocatedObjects, Segment
from tools.parsing import parse_located

EN_DASH = "\u2013"


def object_lines(result: LocatedObjects) -> list[str]:
    """One line per object: label, box corners in whole pixels, and mask area when decoded."""
    lines = []
    for obj in result.objects:
        x0, y0, x1, y1 = (f"{v:.0f}" for v in obj.box.xyxy)
        line = f"{obj.label} at ({x0}, {y0}){EN_DASH}({x1}, {y1}) px"
        if isinstance(obj, Segment) and obj.area_px is not None:
            line += f", mask {obj.area_px:,} px²"
        lines.append(line)
    return lines


def readable_answer(text: str, *, width: int, height: int) -> str:
    """`text` with its located objects written out; text without location tokens is returned as is."""
    result = parse_located(text, width=width, height=height)
    if result is None:
        return text
    lines = object_lines(result) or ["no objects"]
    lines += [f"(not read: {issue.reason})" for issue in result.issues if issue.text]
    return "; ".join(lines)
