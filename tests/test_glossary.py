"""The Chinese edition's glossary: one rendering per term (book/zh/glossary.md), checked on every Chinese page.

``REJECTED`` is the machine-readable half of the glossary: each key is a variant that the glossary
rejects (a regular expression; most are plain Chinese words), each value the term to write instead.
Only prose is checked: code cells, fenced blocks, inline code, math and HTML comments are English
or code and stay as they are (the code cells are the English chapter's, byte for byte).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ZH = ROOT / "book" / "zh"

# Pages not yet edited against the glossary (none now: every zh page is checked).
PAGES_PENDING_EDIT: set[str] = set()

REJECTED: dict[str, str] = {
    # terms
    r"头部": "分类头",  # the classifier head
    r"深度卷积(?!网络|神经网络)": "逐通道卷积",  # depthwise convolution (not a deep convolutional network)
    r"深度可分离（depthwise）": "逐通道卷积（depthwise）",  # separable = depthwise + 1×1 pointwise
    r"步长": "步幅",  # stride
    r"从零训练|从零开始训练": "从头训练",
    r"单元格": "代码单元",
    r"源领域": "源域",
    r"目标领域": "目标域",
    r"基础网络|主干网络|主干": "骨干网络",
    r"主干最前端": "起始层",  # the stem
    r"探测器|线性探测": "线性探针",  # a (linear) probe
    r"部门": "商品大类",  # the department task of three_modes
    r"运行统计量|滑动平均": "滑动统计量",  # batch norm's running statistics
    r"批归一化|批标准化|批规范化|批量规范化|批量标准化": "批量归一化",
    r"精调": "微调",
    r"特征抽取": "特征提取",
    r"学习速率": "学习率",
    r"权值衰减": "权重衰减",
    r"过度拟合": "过拟合",
    r"原文勘误": "常见误解勘正",  # 原文 reads as "the English original" in a translated book
    # English left bare in Chinese prose (a gloss in full-width brackets after the term is fine)
    r"(?i)(?<![a-z])epochs?(?![a-z])": "轮次",
    r"(?i)(?<![a-z])notebooks?(?![a-z])": "笔记本",
    r"normalis|initialis|optimis|colour": "US spelling in glosses (normalization, initialization, optimizer, color)",
    # number style (d2l-zh)
    r"[\d.]+[ \u00a0]+%": "15.3%（百分号前不空格）",
    r"\d+ ?px(?![A-Za-z])": "像素",
    r"[\d.]+ ?[MG](?![A-Za-z])": "万、亿",
}

_CODE_CELL = re.compile(r"^```\{code-cell\}.*?^```$", re.M | re.S)
_FENCE = re.compile(r"^([ \t]*)```.*?^\1```[ \t]*$", re.M | re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_GLOSS = re.compile(r"（[A-Za-z][A-Za-z0-9 ,.;:'’/+\-]*）")  # 轮次（epoch）


def _blank(match: re.Match) -> str:
    return "\n" * match.group(0).count("\n")  # keeps the page's line numbers


def prose(text: str) -> str:
    """The page without front matter, code cells, fenced blocks, HTML comments, math, inline code,
    and English glosses in full-width brackets; each removed part leaves its line breaks."""
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = "\n" * text[: end + 4].count("\n") + text[end + 4 :] if end != -1 else text
    for pattern in (_CODE_CELL, _FENCE, _COMMENT, _MATH, _INLINE_CODE, _GLOSS):
        text = pattern.sub(_blank, text)
    return text


def variants(text: str) -> list[str]:
    """``line: 'variant' -> term`` for each rejected variant in the prose of a page."""
    found = []
    for number, line in enumerate(prose(text).splitlines(), 1):
        hits = [(m.start(), m.group(0), term) for pattern, term in REJECTED.items() for m in re.finditer(pattern, line)]
        found += [f"{number}: {variant!r} -> {term}" for _, variant, term in sorted(hits)]
    return found


def _pages() -> list[Path]:
    return sorted(md for md in ZH.glob("*.md") if md.name not in PAGES_PENDING_EDIT)


@pytest.mark.parametrize("md", _pages(), ids=lambda md: md.stem)
def test_a_chinese_page_uses_the_glossary_terms(md: Path):
    found = variants(md.read_text(encoding="utf-8"))
    assert found == [], f"{md.name} (line: variant -> term): " + "; ".join(found)


def test_the_check_catches_a_planted_variant_in_prose_only():
    page = (
        "---\nkernelspec:\n  name: python3\n---\n# 标题\n\n"
        "冻结骨干网络，只训练新的头部，共 3 个 epoch，图像为 64 px，准确率 15.3 %。\n\n"
        "学习率（learning rate）和轮次（epoch）照常。`epochs` 和 `px` 是代码。\n\n"
        "```{code-cell} ipython3\n# 头部 epoch 64 px\n```\n\n```python\nstride = 2  # 步长\n```\n"
        "<!-- 单元格 -->\n"
    )
    found = variants(page)
    assert [f.split(" -> ")[0] for f in found] == ["7: '头部'", "7: 'epoch'", "7: '64 px'", "7: '15.3 %'"]
    fixed = page.replace("头部", "分类头").replace("3 个 epoch", "3 个轮次").replace("64 px", "64 像素")
    assert variants(fixed.replace("15.3 %", "15.3%")) == []


def test_the_glossary_pages_list_every_term_and_are_in_the_toc():
    glossary = (ZH / "glossary.md").read_text(encoding="utf-8")
    terms = {term for term in REJECTED.values() if re.match(r"[\u4e00-\u9fff]", term)}
    missing = sorted(term for term in terms if term.split("（")[0] not in glossary)
    assert missing == [], f"zh/glossary.md does not define {missing}"
    assert "common misconceptions, corrected" in (ROOT / "book" / "glossary.md").read_text(encoding="utf-8").lower()
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    assert "file: book/glossary\n" in toc and "file: book/zh/glossary\n" in toc
    assert toc.index("book/zh/glossary") < toc.index("book/zh/bibliography")
