"""The reproduction ledger computes its verdicts from results files."""

from __future__ import annotations

from helpers import ledger


def _results() -> dict[str, dict]:
    return {
        "02_neuron_discovery": {
            "table1": [
                # b's neuron is close only with the prediction position: the verdict
                # uses the soft-only number
                {"task": "a", "prompt tuning": 80.0, "top neuron": 79.0, "top soft neuron": 78.0},
                {"task": "b", "prompt tuning": 90.0, "top neuron": 89.0, "top soft neuron": 70.0},
            ],
            "table3": [
                {"task": "a", "random guess": 50.0, "random prompt": 75.0, "random model": 51.0},
                {"task": "b", "random guess": 50.0, "random prompt": 80.0, "random model": 55.0},
            ],
        },
        "04_cross_task_similarity": {
            "type_summary": {"same task": 0.5, "same type": 0.3, "cross type": 0.1},
            "label_word_robustness": [
                {"ρ with default words": 0.5, "ρ default vs default": 0.55},
            ],
        },
        "06_transferability": {
            "correlations": [
                {"indicator": "ON", "mean Spearman ρ": 0.6},
                {"indicator": "skill-neuron ON", "mean Spearman ρ": 0.4},
            ]
        },
    }


def test_verdicts_follow_the_rules_and_missing_chapters_are_not_run() -> None:
    rows = {(r["source"], r["claim"][:20]): r for r in ledger.ledger_rows(_results())}
    verdicts = [r["verdict"] for r in ledger.ledger_rows(_results())]
    assert len(verdicts) == len(ledger.CLAIMS)
    by_chapter = {c.chapter: [] for c in ledger.CLAIMS}
    for claim, row in zip(ledger.CLAIMS, ledger.ledger_rows(_results()), strict=True):
        by_chapter[claim.chapter].append(row["verdict"])
    assert by_chapter["02_neuron_discovery"] == ["partly", "holds"]
    assert by_chapter["04_cross_task_similarity"] == ["holds", "partly"]
    assert by_chapter["06_transferability"] == ["does not hold"]
    assert set(by_chapter["03_perturbation"]) == {"not run"}
    assert all(r["where"].endswith(".html#" + r["where"].split("#")[1]) for r in rows.values())


def test_grade() -> None:
    assert ledger.grade(3, 3) == "holds"
    assert ledger.grade(1, 3) == "partly"
    assert ledger.grade(0, 3) == "does not hold"
    assert ledger.grade(0, 0) == "does not hold"


def test_load_results_skips_missing_chapters_and_the_table_links(store) -> None:
    store.write_results("04_cross_task_similarity", _results()["04_cross_task_similarity"])
    found = ledger.load_results(store)
    assert list(found) == ["04_cross_task_similarity"]
    html = ledger.styled(ledger.ledger_rows(found)).to_html()
    assert 'href="04_cross_task_similarity.html#similarity-of-neuron-rankings"' in html


def test_every_claim_links_to_a_heading_of_its_chapter() -> None:
    import re

    import nbformat

    from helpers import runner

    def slug(heading: str) -> str:
        text = re.sub(r"[^\w\s-]", "", heading.lower()).strip()
        return re.sub(r"[\s_]+", "-", text)

    chapters = {nb.stem: nb for nb in runner.notebooks()}
    for claim in ledger.CLAIMS:
        cells = nbformat.read(chapters[claim.chapter], as_version=4).cells
        headings = {
            slug(line.lstrip("#").strip())
            for cell in cells
            if cell.cell_type == "markdown"
            for line in cell.source.splitlines()
            if line.startswith("#")
        }
        assert claim.anchor in headings, (claim.chapter, claim.anchor)
