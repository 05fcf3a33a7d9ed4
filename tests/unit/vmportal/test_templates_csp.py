"""The portal's Content Security Policy allows styles and scripts from its own files only
(style-src 'self', script-src 'self'): a template with an inline style attribute or an inline
script would be blocked in the browser. Caught here, before a browser test has to."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"
INLINE_STYLE = re.compile(r"""\sstyle\s*=\s*["']""", re.IGNORECASE)
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"""\son[a-z]+\s*=\s*["']""", re.IGNORECASE)


def test_no_template_has_inline_styles_scripts_or_event_handlers():
    found = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = path.read_text()
        for name, pattern in (("style", INLINE_STYLE), ("script", INLINE_SCRIPT), ("handler", INLINE_HANDLER)):
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path.relative_to(TEMPLATES)}:{line} inline {name}")
    assert found == []


def test_the_patterns_see_what_csp_blocks():
    assert INLINE_STYLE.search('<input style="width:4em">')
    assert INLINE_SCRIPT.search("<script>alert(1)</script>") and not INLINE_SCRIPT.search('<script src="/s.js"></script>')
    assert INLINE_HANDLER.search('<a onclick="x()">') and not INLINE_HANDLER.search('<a data-on="x">')
