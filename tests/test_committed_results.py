"""The committed results stay reachable from the code: ``--resume`` reuses a saved result only when
the model the code builds now prints exactly as the saved one (its ``architecture``), so a
refactor that renames a layer would make every committed result of that model unresumable (and
its re-run refused without ``--overwrite``). This guards that, without any data set: the models
are built for each data set's shape."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import homework_cnn_architecture_analysis
import homework_cnn_vs_fc_comparison
import homework_custom_layers_experiments
from utils.data import DATASETS, ImageSet

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = [e for script in (homework_cnn_vs_fc_comparison, homework_cnn_architecture_analysis,
                                homework_custom_layers_experiments) for e in script.EXPERIMENTS.values()]


def shaped_like(dataset: str) -> ImageSet:
    """Two blank images with the data set's shape and classes: all a model builder reads."""
    d = DATASETS[dataset]
    return ImageSet(torch.zeros(2, *d.shape, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64),
                    d.classes, d.mean, d.std)


def saved_architectures(folder: Path) -> dict[str, str]:
    found = {}
    for path in sorted(folder.glob("*_seed*.json")):
        config = json.loads(path.read_text()).get("config") or {}
        found.setdefault(config.get("model"), config.get("architecture"))
    return found


@pytest.mark.parametrize("exp", EXPERIMENTS, ids=[e.name for e in EXPERIMENTS])
def test_every_committed_result_is_the_model_the_code_builds_now(exp):
    builders = {spec.name: spec.build for spec in exp.models(shaped_like(exp.dataset))}
    folders = [ROOT / "results" / exp.name, ROOT / "results" / "check_2x" / exp.name]
    checked = 0
    for folder in folders:
        for model, architecture in saved_architectures(folder).items():
            assert model in builders, f"{folder}: {model} is no longer declared"
            assert repr(builders[model]()) == architecture, f"{folder}: {model} prints differently now"
            checked += 1
    assert checked >= len(builders), f"{exp.name}: committed results missing for some models"
