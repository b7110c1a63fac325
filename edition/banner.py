"""What a chapter page says about its outputs, as MyST Markdown inserted under the page title.

- a fresh reference: the provenance header (profile, device, torch, commit, date, run time);
- no fresh reference: a banner saying which profile and device of this build produced the outputs,
  plus a hidden code cell that keys the execution cache on profile, device and companion.
"""

from __future__ import annotations

import hashlib
import re

CSS_CLASS = "tlbook-provenance"
_TITLE = re.compile(r"^# .+$", re.MULTILINE)


def _duration(seconds: float, lang: str = "en") -> str:
    minutes, secs = divmod(round(seconds), 60)
    if lang == "zh":
        return f"{minutes} 分 {secs} 秒" if minutes else f"{secs} 秒"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _where(prov: dict, lang: str = "en") -> str:
    return prov["gpu"] or ("CPU" if lang == "zh" else "a CPU")


_SIZES = re.compile(
    r"(?P<train>\w+) train / (?P<val>\w+) validation / (?P<test>\w+) test images per class, "
    r"(?P<epochs>\d+) epochs, (?P<px>\d+) px, batch (?P<batch>\d+)"
)


def _sizes(summary: str, lang: str = "en") -> str:
    """``"profile 'quick': 100 train / ..."`` -> ``"100 train / ..."`` (in Chinese, translated)."""
    sizes = summary.split(": ", 1)[-1]
    match = _SIZES.fullmatch(sizes)
    if lang != "zh" or match is None:
        return sizes
    n = {k: ("全部" if v == "all" else f"{v} 张") for k, v in match.groupdict().items()}
    return (
        f"每类训练图像 {n['train']}、验证图像 {n['val']}、测试图像 {n['test']}，训练 {match['epochs']} 轮，"
        f"{match['px']} 像素，批量 {match['batch']}"
    )


def _device(device: str, lang: str) -> str:
    """The device as the run described it; in Chinese, without article and with Chinese words:
    ``"cpu (x86_64, 2 threads), fp32"`` -> ``"CPU（x86_64，2 个线程），fp32"``."""
    if lang != "zh":
        return device
    device = device.removeprefix("an ").removeprefix("a ")
    device = re.sub(r"^cpu\b", "CPU", device)
    device = re.sub(r"(\d+) threads?", r"\1 个线程", device)
    return device.replace(" (", "（").replace("(", "（").replace(")", "）").replace(", ", "，")


def is_full_size(prov: dict) -> bool:
    """A reference counts as the book's full-size result when it ran in ``full`` on a GPU."""
    return prov["profile"] == "full" and bool(prov.get("gpu"))


# The sentences of the header and the banner, in each language of the book (edition.languages).
# {full_size} is the one link to where the book's full-size figures come from (the performance appendix).
TEXT = {
    "en": {
        "facts": "Executed in the `{profile}` profile ({sizes}) on {device}, torch {torch}, commit `{commit}`, "
        "{date}, run time {duration}.",
        "full_title": "Outputs on this page: the reference run on {where}",
        "small_title": "Outputs on this page: the CPU edition",
        "small_title_gpu": "Outputs on this page: a `{profile}` run on a GPU",
        "small": "This is the book's published edition: every chapter is run at these sizes on a CPU, so that "
        "any reader can reproduce it in minutes. Whole datasets at the networks' own resolution need a GPU: "
        "those figures, measured or published, are collected in {full_size}.",
        "claims": "Claims of the text checked by this run: {claims}.",
        "changed": "The companion package has changed since this run ({files}). The code on "
        "this page is the code that ran, but re-running it now may print somewhat different numbers.",
        "built": "These outputs come from the `{profile}` profile ({sizes}) on {device}, executed while "
        "this website was built. ",
        "smoke": "They show that the code runs, not what it achieves. ",
        "pointer": "Full-size figures are collected in {full_size}.",
        "unused": "A stored reference run exists ({profile} on {where}, commit `{commit}`), but it is not shown: "
        "{reason}.",
        "built_title": "Outputs on this page: a `{profile}` run from the website build",
        "full_size": "{ref}`full-size`",
        "full_size_plain": "the performance appendix",
        "gpu": "a GPU",
        "cpu": "a CPU",
        "uncommitted": " with uncommitted changes",
        "join": "; ",
    },
    "zh": {
        "facts": "在 `{profile}` 配置（{sizes}）下运行于 {device}，torch {torch}，提交 `{commit}`，{date}，"
        "运行时间 {duration}。",
        "full_title": "本页输出：在 {where} 上的参考运行",
        "small_title": "本页输出：CPU 版",
        "small_title_gpu": "本页输出：在 GPU 上的 `{profile}` 运行",
        "small": "这是本书出版的版本：每一章都按上述规模在 CPU 上运行，读者几分钟内即可复现。完整数据集、"
        "网络原生分辨率的实验需要 GPU，这些结果（实测的或已发表的）汇总在{full_size}。",
        "claims": "这次运行检验了正文的以下论断（照原样列出英文输出，holds 表示本次运行验证成立，not checked 表示本配置下未检查）："
        "{claims}。",
        "changed": "这次运行之后，配套程序包 companion 有过改动（{files}）。本页的代码就是当时运行的代码，"
        "但现在重新运行，打印出的数字可能略有不同。",
        "built": "这些输出是构建本网站时，在 {device} 上以 `{profile}` 配置（{sizes}）执行得到的。",
        "smoke": "它们只说明代码能够运行，并不代表方法能达到的效果。",
        "pointer": "完整规模的结果汇总在{full_size}。",
        "unused": "已有一次存储的参考运行（{profile}，{where}，提交 `{commit}`），但这里没有显示它：{reason}。",
        "built_title": "本页输出：网站构建时的 `{profile}` 运行",
        "full_size": "{ref}`zh-full-size`",
        "full_size_plain": "性能附录",
        "gpu": " GPU ",
        "cpu": " CPU ",
        "uncommitted": "（含未提交的改动）",
        "join": "；",
    },
}
REASONS_ZH = {
    "no stored reference run": "没有存储的参考运行",
    "the chapter's code changed since the reference run": "参考运行之后，本章的代码有过改动",
    "the companion changed since the reference run": "参考运行之后，配套程序包有过改动",
}


def _reason(reason: str, lang: str) -> str:
    if lang == "zh":
        for english, chinese in REASONS_ZH.items():
            if reason.startswith(english):
                return chinese + reason[len(english) :]
    return reason


def _full_size(lang: str, link: bool) -> str:
    return TEXT[lang]["full_size" if link else "full_size_plain"]


def reference_header(prov: dict, changed_companion: tuple[str, ...] = (), lang: str = "en", link: bool = True) -> str:
    """The admonition shown at the top of a page rendered from its stored reference run; ``link``:
    whether the book has the performance appendix that the header points to."""
    t = TEXT[lang]
    commit = prov["commit"][:10] + (t["uncommitted"] if prov.get("dirty") else "")
    sizes = _sizes(prov.get("profile_summary", prov["profile"]), lang)
    facts = t["facts"].format(
        profile=prov["profile"], sizes=sizes, device=_device(prov["device"], lang), torch=prov["torch"],
        commit=commit, date=prov["date"][:10], duration=_duration(prov["seconds"], lang),
    )  # fmt: skip
    lines = [facts]
    if is_full_size(prov):
        title = t["full_title"].format(where=_where(prov, lang))
    elif prov["gpu"]:
        title = t["small_title_gpu"].format(profile=prov["profile"])
        lines.append(t["pointer"].format(full_size=_full_size(lang, link)))
    else:
        title = t["small_title"]
        lines.append(t["small"].format(full_size=_full_size(lang, link)))
    if prov.get("claims"):
        lines.append(t["claims"].format(claims=t["join"].join(prov["claims"])))
    if changed_companion:
        lines.append(t["changed"].format(files=", ".join(changed_companion)))
    return _admonition(title, "note", lines)


def build_banner(profile, device: str, reason: str, prov: dict | None, lang: str = "en", link: bool = True) -> str:
    """The admonition on a page whose outputs this build executed (no fresh reference)."""
    t = TEXT[lang]
    lines = [
        t["built"].format(profile=profile.name, sizes=_sizes(str(profile), lang), device=_device(device, lang))
        + (t["smoke"] if profile.name == "smoke" else "")
        + t["pointer"].format(full_size=_full_size(lang, link))
    ]
    if prov is not None:
        lines.append(
            t["unused"].format(
                profile=prov["profile"],
                where=_where(prov, lang),
                commit=prov["commit"][:10],
                reason=_reason(reason, lang),
            )
        )
    return _admonition(t["built_title"].format(profile=profile.name), kind="warning", lines=lines)


def cache_key_cell(profile_name: str, device: str, companion_files: dict[str, str]) -> str:
    """A hidden code cell whose text changes whenever the profile, device or companion do.

    jupyter-cache keys executed notebooks on their code cells only; with this cell among them, outputs
    executed with other companion code, in another profile or on another device are never re-used.
    """
    digest = hashlib.sha256("".join(f"{k}={v};" for k, v in sorted(companion_files.items())).encode()).hexdigest()
    return (
        "```{code-cell} ipython3\n:tags: [remove-cell]\n\n"
        "# Added by the website build (edition.sphinx_ext): the execution cache keys on this cell.\n"
        f"# profile {profile_name}; device {device}; companion {digest[:16]}\n```\n"
    )


def _admonition(title: str, kind: str, lines: list[str]) -> str:
    body = "\n\n".join(lines)
    return f":::{{admonition}} {title}\n:class: {kind} {CSS_CLASS}\n\n{body}\n:::\n"


def insert_under_title(text: str, block: str) -> str:
    """``text`` (a MyST notebook) with ``block`` right after its ``# title`` line (or its front matter)."""
    start = 0
    if text.startswith("---"):
        end = text.find("\n---", 3)
        start = text.find("\n", end + 4) + 1 if end != -1 else 0
    first_cell = text.find("```{code-cell}", start)
    match = _TITLE.search(text, start, first_cell if first_cell != -1 else len(text))
    at = match.end() + 1 if match else start
    return f"{text[:at]}\n{block}\n{text[at:]}"
