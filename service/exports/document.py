"""A small document model (sections of paragraphs, facts, tables, figures and code)
and its two renderings: self-contained HTML (figures embedded as PNG data) and
one PDF (fpdf2, with a Unicode font so any recorded text prints as recorded)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import matplotlib
from fpdf import FPDF
from fpdf.enums import WrapMode, XPos, YPos


@dataclass(frozen=True)
class Para:
    """A paragraph of text."""

    text: str


@dataclass(frozen=True)
class Heading:
    """A sub-heading inside a section."""

    text: str


@dataclass(frozen=True)
class Facts:
    """Label/value pairs."""

    items: list[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    """A table with a header row."""

    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    """A plot, by the name of its PNG in the document's figures."""

    name: str
    caption: str


@dataclass(frozen=True)
class Code:
    """Preformatted text (signed statements, JSON)."""

    text: str


Block = Para | Heading | Facts | Table | Figure | Code


@dataclass
class Section:
    """A titled part of the document."""

    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    """What the HTML and the PDF both show."""

    title: str
    subtitle: list[str]
    sections: list[Section]
    figures: dict[str, bytes] = field(default_factory=dict)


_TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ doc.title }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#1b1f24;line-height:1.45}
h1{margin-bottom:.2rem} .sub{color:#555;margin:.1rem 0}
h2{border-bottom:1px solid #ccd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem} th,td{border:1px solid #ccd;padding:.25rem .5rem;
text-align:left;vertical-align:top;word-break:break-all} th{background:#f1f3f6} dl{display:grid;
grid-template-columns:max-content auto;gap:.2rem 1rem} dt{font-weight:600} dd{margin:0;word-break:break-all}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:.8rem} figure{margin:1rem 0} img{max-width:100%}
nav ol{columns:2}
</style></head><body>
<h1>{{ doc.title }}</h1>{% for line in doc.subtitle %}<p class="sub">{{ line }}</p>{% endfor %}
<nav><ol>{% for s in doc.sections %}<li><a href="#s{{ loop.index }}">{{ s.title }}</a></li>{% endfor %}</ol></nav>
{% for s in doc.sections %}<section id="s{{ loop.index }}"><h2>{{ s.title }}</h2>
{% for b in s.blocks %}{% set kind = b.__class__.__name__ %}
{% if kind == "Para" %}<p>{{ b.text }}</p>
{% elif kind == "Heading" %}<h3>{{ b.text }}</h3>
{% elif kind == "Facts" %}<dl>{% for k, v in b.items %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
{% elif kind == "Table" %}<table><thead><tr>{% for h in b.headers %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in b.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{% elif kind == "Figure" %}<figure><img alt="{{ b.caption }}" src="data:image/png;base64,{{ images[b.name] }}">
<figcaption>{{ b.caption }}</figcaption></figure>
{% elif kind == "Code" %}<pre>{{ b.text }}</pre>{% endif %}{% endfor %}</section>
{% endfor %}</body></html>
""")


def render_html(document: Document) -> bytes:
    """The document as one self-contained HTML page."""
    images = {name: base64.b64encode(png).decode("ascii") for name, png in document.figures.items()}
    return _TEMPLATE.render(doc=document, images=images).encode("utf-8")


_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


class _Pdf(FPDF):
    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Sans", size=8)
        self.cell(0, 8, f"{self.page_no()}", align="C")


def render_pdf(document: Document) -> bytes:
    """The document as one PDF (A4)."""
    pdf = _Pdf(format="A4")
    pdf.add_font("Sans", fname=str(_FONTS / "DejaVuSans.ttf"))
    pdf.add_font("Sans", style="B", fname=str(_FONTS / "DejaVuSans-Bold.ttf"))
    pdf.add_font("Mono", fname=str(_FONTS / "DejaVuSansMono.ttf"))
    pdf.set_auto_page_break(True, margin=16)
    pdf.add_page()
    pdf.set_font("Sans", "B", 18)
    pdf.multi_cell(0, 9, document.title, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")
    pdf.set_font("Sans", size=9)
    for line in document.subtitle:
        pdf.multi_cell(0, 5, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT, wrapmode=WrapMode.CHAR, align="L")
    for section in document.sections:
        pdf.ln(4)
        pdf.set_font("Sans", "B", 14)
        pdf.multi_cell(0, 8, section.title, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")
        for block in section.blocks:
            _pdf_block(pdf, block, document.figures)
    return bytes(pdf.output())


def _pdf_block(pdf: FPDF, block: Block, figures: dict[str, bytes]) -> None:
    if isinstance(block, Para):
        pdf.set_font("Sans", size=10)
        pdf.multi_cell(0, 5, block.text, new_x=XPos.LMARGIN, new_y=YPos.NEXT, wrapmode=WrapMode.CHAR, align="L")
        pdf.ln(1)
    elif isinstance(block, Heading):
        pdf.ln(2)
        pdf.set_font("Sans", "B", 11)
        pdf.multi_cell(0, 6, block.text, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")
    elif isinstance(block, Facts):
        _pdf_table(pdf, None, [[k, v] for k, v in block.items], widths=(1, 2.4))
    elif isinstance(block, Table):
        _pdf_table(pdf, block.headers, block.rows)
    elif isinstance(block, Figure):
        pdf.image(io.BytesIO(figures[block.name]), w=pdf.epw * 0.7)
        pdf.set_font("Sans", size=8)
        pdf.multi_cell(0, 4, block.caption, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")
        pdf.ln(1)
    else:
        pdf.set_font("Mono", size=7)
        pdf.multi_cell(0, 3.5, block.text, new_x=XPos.LMARGIN, new_y=YPos.NEXT, wrapmode=WrapMode.CHAR, align="L")
        pdf.ln(1)


def _pdf_table(pdf: FPDF, headers: list[str] | None, rows: list[list[str]], widths: tuple[float, ...] = ()) -> None:
    if not rows and headers is None:
        return
    pdf.set_font("Sans", size=8)
    columns = len(headers) if headers is not None else len(rows[0])
    with pdf.table(
        col_widths=widths or None,
        text_align="LEFT",
        wrapmode=WrapMode.CHAR,
        first_row_as_headings=headers is not None,
        line_height=4,
        width=pdf.epw,
    ) as table:
        for row in ([headers] if headers is not None else []) + rows:
            cells = table.row()
            for value in (list(row) + [""] * columns)[:columns]:
                cells.cell(value)
    pdf.ln(1)
