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


def test_convergence_report_compares_each_contrast_at_both_budgets(tmp_path):
    from utils.convergence import write_report
    from utils.results import result_path, write_contrasts, write_json_atomic

    def save(folder, model, seed, epochs, acc):
        result = {"model": model, "seed": seed, "epochs": epochs, "test_acc": acc,
                  "config": {"seed": seed, "epochs": epochs}}
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(result_path(folder, model, seed), result)
        return result

    main, check = tmp_path / "results" / "architecture_analysis" / "depth", tmp_path / "check"
    committed = [save(main, m, s, 15, acc + 0.001 * s) for s in range(3)
                 for m, acc in (("Plain-9", 0.70), ("Residual-9", 0.75), ("Plain-21", 0.72))]
    # Plain-4 beats Plain-9 on average but not in seed 0: its sign at 2N is judged against seed 0 at N
    committed += [save(main, "Plain-4", s, 15, acc) for s, acc in enumerate((0.69, 0.72, 0.73))]
    write_contrasts(main, committed, [("Residual-9", "Plain-9"), ("Plain-21", "Plain-9"), ("Plain-4", "Plain-9")])
    (main / "table.md").write_text("| модель | test acc |\n| --- | --- |\n| Plain-9 | x |\n| Plain-21 | x |\n"
                                   "| Residual-9 | x |\n\n_caption_\n")
    (main / "stability.json").write_text("{}")  # not a result: skipped
    twice = check / "architecture_analysis" / "depth"
    check_runs = [save(twice, "Plain-9", 0, 30, 0.80), save(twice, "Residual-9", 0, 30, 0.78)]
    # the real +5 pt contrast flips at 2N; the check's own contrasts.md gives its one-seed difference
    write_contrasts(twice, check_runs, [("Residual-9", "Plain-9")])
    one_seed = (twice / "contrasts.md").read_text()
    assert "| Residual-9 − Plain-9 | test acc | -2.00 |" in one_seed and "Один сид" in one_seed
    assert "ДИ" not in one_seed
    assert "Проверка не закончена:** нет Plain-21" in write_report(tmp_path / "results", check).read_text()

    save(twice, "Plain-21", 0, 30, 0.81)
    save(twice, "Plain-4", 0, 30, 0.79)
    text = write_report(tmp_path / "results", check).read_text()
    assert "### 2.2: `architecture_analysis/depth`, 15 → 30 эпох" in text
    assert "| Residual-9 | 75.10 ± 0.10 | 75.00 | 78.00 | +3.00 |" in text
    assert "| Residual-9 − Plain-9 | +5.00 [+5.00; +5.00] | +5.00 | -2.00 | **сменился** |" in text
    assert "| Plain-21 − Plain-9 | +2.00 [+2.00; +2.00] | +2.00 | +1.00 | тот же |" in text
    assert "| Plain-4 − Plain-9 | +1.23 [" in text and "| -1.00 | -1.00 | тот же |" in text
    assert "изменился: Residual-9 > Plain-21 > Plain-4 > Plain-9 → Plain-21 > Plain-9 > Plain-4 > Residual-9." in text
    assert "Проверка не закончена" not in text
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| Plain") or line.startswith("| Res")]
    assert rows[:3] == ["| Plain-9", "| Plain-21", "| Residual-9"]  # the committed table's order
    assert write_report(tmp_path / "results", tmp_path / "nothing") is None
