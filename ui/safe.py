"""Text from devices, registries, URLs and users, made safe for where the viewer shows it.

Streamlit renders GitHub-flavoured Markdown in titles, headers, captions, alerts, metric labels
and values (links, images that the browser fetches, autolinked bare URLs, ``$...$`` LaTeX,
``:red[...]`` directives); Plotly renders a subset of HTML (``<a href>``, ``<b>``, ``<br>``) in
trace names, axis categories and hover text; spreadsheets run a cell that starts with ``=``.
A device may call itself anything, so each of those sinks gets its own escape here and the pages
use nothing else. Tables (``st.dataframe``) and widget options are plain text in Streamlit and
need none.
"""

from __future__ import annotations

import html
import re
import string

import polars as pl

# CommonMark: any ASCII punctuation may be backslash-escaped, and an escaped character is always
# literal text. Escaping all of them (not a hand-picked few) also defeats LaTeX (``\$``) and
# Streamlit's ``:directive[...]``.
_MD_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")
# GFM's autolink literals are found in the text *after* escapes are resolved (remark's
# mdast-util-gfm-autolink-literal: ``https?://``, ``www.`` and ``name@host.tld``), so escaping
# cannot stop them; an invisible WORD JOINER inside each pattern does.
_AUTOLINK = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)")
WORD_JOINER = "\u2060"
# Line breaks would start new blocks (headings, lists, code); other control characters have no
# business on a page.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def md_escape(text: object) -> str:
    """``text`` as literal characters in any element that renders Markdown."""
    if text is None:
        return ""
    text = _AUTOLINK.sub(WORD_JOINER, _CONTROL.sub(" ", str(text)))
    return _MD_SPECIAL.sub(r"\\\1", text)


def plot_escape(text: object) -> str:
    """``text`` as literal characters in a Plotly label, category or hover text. Only ``&``, ``<``
    and ``>``: Plotly decodes those entities but not ``&quot;``."""
    if text is None:
        return ""
    return html.escape(_CONTROL.sub(" ", str(text)), quote=False)


def plot_labels(values: list) -> list:
    return [plot_escape(v) for v in values]


def spreadsheet_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Text columns whose cells could start a spreadsheet formula (``=``, ``+``, ``-``, ``@``, tab,
    CR: OWASP's CSV injection list) get a leading ``'``; numeric columns are untouched, so a
    genuine negative number (PV export) stays a number."""
    text = [name for name, dtype in frame.schema.items()
            if dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, pl.Enum)]
    starts = r"^[=+\-@\t\r]"
    return frame.with_columns(
        pl.when(pl.col(name).cast(pl.Utf8).str.contains(starts))
        .then(pl.lit("'") + pl.col(name).cast(pl.Utf8))
        .otherwise(pl.col(name).cast(pl.Utf8)).alias(name)
        for name in text)


def file_part(text: object, limit: int = 60) -> str:
    """A piece of a download's file name: no path separators, quotes or control characters."""
    return _UNSAFE_FILE_CHARS.sub("_", str(text))[:limit].strip("._") or "home"
