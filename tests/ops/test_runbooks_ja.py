"""The Japanese runbooks: one spelling per word, one word per meaning, the English page's steps.

Staff search a page for a word they saw on another (or in an alert) and follow numbered steps that
an English-reading colleague names by number. So:
- katakana follow 公用文作成の考え方 (2022) / 外来語の表記: words from English -er/-or/-ar end in
  「ー」 (ブローカー, ユーザー, サーバー, 中間サーバー as J-LIS writes it);
- the operator's replay of a set-aside message is 再投入; リプレイ appears only in リプレイ攻撃 (a
  security refusal), and 再送 (which could mean either, or a retry) is not used;
- a jgw route is ルート, never 経路;
- every numbered heading and numbered step of the English page has the same number in the Japanese
  one, in the same order, and the pages give the same ``jgw`` command lines;
- every Grafana dashboard panel carries a Japanese description.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.ops.test_docs_match_code import command_lines

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "ops" / "runbooks"
JA_PAGES = sorted(RUNBOOKS.glob("*.ja.md"))
PAGES = [*JA_PAGES, RUNBOOKS / "README.md"]

#: spelling without the final 「ー」 -> the one spelling used
LONG_VOWEL = {
    "ブローカ": "ブローカー", "ユーザ": "ユーザー", "サーバ": "サーバー", "インストーラ": "インストーラー",
    "ヘッダ": "ヘッダー", "エディタ": "エディター", "コンピュータ": "コンピューター", "フォルダ": "フォルダー",
    "パラメータ": "パラメーター", "ブラウザ": "ブラウザー", "フィルタ": "フィルター", "ルータ": "ルーター",
    "カウンタ": "カウンター", "コンテナ": "コンテナー", "エクスポータ": "エクスポーター",
}


def ja_text(page: Path) -> str:
    """The page without its code (command lines and output stay in English)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_katakana_end_in_the_long_vowel(page: Path) -> None:
    text = ja_text(page)
    bad = [f"{short} -> {full}" for short, full in LONG_VOWEL.items() if re.search(f"{short}(?!ー)", text)]
    assert bad == [], f"{page.name}: {bad}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_replay_and_route_have_one_word_each(page: Path) -> None:
    text = ja_text(page)
    assert "再送" not in text, f"{page.name}: the operator's replay is 再投入 (リプレイ攻撃 for the attack)"
    assert re.findall(r"リプレイ(?!攻撃)", text) == [], f"{page.name}: リプレイ only in リプレイ攻撃"
    assert "経路" not in text, f"{page.name}: a jgw route is ルート"


def numbers(page: Path) -> list[str]:
    """Numbered headings ('## 3.') and numbered steps ('3. ', '3b. ') in order, code left out."""
    out, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = re.match(r"^(#+)\s+(\d+[a-z]?)\.", line)
        step = re.match(r"^(\s*)(\d+[a-z]?)\.\s", line)
        if heading:
            out.append(f"{heading.group(1)} {heading.group(2)}")
        elif step:
            out.append(f"{len(step.group(1)) // 2}:{step.group(2)}")
    return out


PAIRS = [(p.with_name(p.name.replace(".ja.md", ".en.md")), p) for p in JA_PAGES]


@pytest.mark.parametrize(("en", "ja"), PAIRS, ids=lambda p: p.name)
def test_steps_are_numbered_as_in_english(en: Path, ja: Path) -> None:
    assert en.exists(), f"{ja.name} has no English page"
    assert numbers(ja) == numbers(en)


def shape(line: str) -> str:
    """A command line with its placeholders (``MESSAGE_ID``, ``NEW.crl``, or their Japanese
    translation ``メッセージID``) as ARG: the verbs, options and real paths are what must agree."""
    def word(w: str) -> str:
        bare = w.strip("[]")
        placeholder = not bare.isascii() or re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[a-z]+)?", bare) is not None
        return "ARG" if placeholder else w
    return " ".join(word(w) for w in line.split())


@pytest.mark.parametrize(("en", "ja"), PAIRS, ids=lambda p: p.name)
def test_the_same_command_lines_as_in_english(en: Path, ja: Path) -> None:
    assert [shape(c) for c in command_lines(ja)] == [shape(c) for c in command_lines(en)]


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A short spelling, a 再送, a 経路 and a missing step are all caught."""
    page = tmp_path / "x.ja.md"
    page.write_text("ブローカに接続します。再送します。経路を止めます。\n1. 一\n", encoding="utf-8")
    assert re.search("ブローカ(?!ー)", ja_text(page))
    assert "再送" in ja_text(page) and "経路" in ja_text(page)
    english = tmp_path / "x.en.md"
    english.write_text("1. one\n2. two\n", encoding="utf-8")
    assert numbers(page) != numbers(english)


def panels(dashboard: dict[str, object]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for panel in dashboard["panels"]:  # type: ignore[attr-defined]
        out.append(panel)
        out += panel.get("panels", [])
    return out


def test_every_dashboard_panel_has_a_japanese_description() -> None:
    """Each panel's description (Grafana's (i) tooltip) says in Japanese what it shows; rows included."""
    dashboard = json.loads((REPO / "ops" / "grafana" / "jgw-dashboard.json").read_text(encoding="utf-8"))
    missing = [p.get("title") for p in panels(dashboard)
               if not re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", str(p.get("description", "")))]
    assert missing == []
