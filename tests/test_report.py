from utils.results import markdown_table, update_readme


def test_update_readme_replaces_marked_blocks(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "table.md").write_text(markdown_table([{"a": 0.5}], [("a", "A", "pct")]) + "\n")
    (tmp_path / "r" / "bench.txt").write_text("ratio 1.5x\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- BEGIN r/table.md -->\nold\n<!-- END r/table.md -->\n"
                      "<!-- BEGIN r/bench.txt -->\n<!-- END r/bench.txt -->\n"
                      "<!-- BEGIN r/missing.md -->\nkeep\n<!-- END r/missing.md -->\n")
    missing, reduced = update_readme(readme)
    text = readme.read_text()
    assert "| 50.00 |" in text and "old" not in text
    assert "```text\nratio 1.5x\n```" in text
    assert "keep" in text and missing == ["r/missing.md"] and reduced == []
    update_readme(readme)  # idempotent
    assert readme.read_text() == text
