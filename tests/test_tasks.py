"""The task shapes (xdistil_ray/tasks/shapes.py): one Task each, and shared code that asks the
task instead of branching on its name."""

import os
import re

import pytest

from xdistil_ray.tasks.shapes import TASKS, task_of

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "xdistil_ray")

NAMED = re.compile(r"""task\s*(==|!=|not in|in)\s*[("']|==\s*"(sentence|pair|token|qa|none)"|"""
                   r"""!=\s*"(sentence|pair|token|qa|none)"|\[(task|"task")\]\s*==""")

STILL_NAMED = {
    "config/checks.py": "the config's own checks of `task` and of the fields that go with it "
                        "(below the tasks layer: they name the values a user writes)",
    "config/__init__.py": "Config.windows(): the `qa` section applies to a QA run only",
    "data/embedded_data.py": "the embedded default's data: one generator per task shape",
    "data/embedded_tasks.py": "the embedded pair, token and QA generators' rows and files",
    "tasks/shapes.py": "the Task definitions themselves",
}
"""Files of the package that still name a task in a comparison, and why. Everywhere else the
code asks the Task (2026-12-07, counted by NAMED: 59 lines in 16 files at fa238b0, before Task
existed; 16 in these 5 after)."""


def _named_lines() -> dict[str, list[str]]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
            for line in open(path, encoding="utf-8"):
                code = line.split("#")[0]
                if NAMED.search(code):
                    found.setdefault(rel, []).append(line.strip())
    return found


def test_shared_code_asks_the_task_instead_of_naming_it():
    found = _named_lines()
    assert {rel: lines for rel, lines in found.items() if rel not in STILL_NAMED} == {}
    assert set(found) <= set(STILL_NAMED)


def test_the_check_sees_a_name_compared():
    assert NAMED.search('if cfg.task == "qa":') and NAMED.search("task in ('token', 'qa')")
    assert NAMED.search('qa = report["task"] == "qa"')
    assert not NAMED.search("if task_of(cfg.task).spans:")


def test_each_shape_has_its_head_labels_and_scores():
    assert list(TASKS) == ["sentence", "pair", "token", "qa", "none"]
    heads = {name: t.head for name, t in TASKS.items()}
    assert heads == {"sentence": "sequence", "pair": "sequence", "token": "token", "qa": "qa",
                     "none": None}
    assert [n for n, t in TASKS.items() if t.per_token] == ["token", "qa"]
    assert [n for n, t in TASKS.items() if t.classes] == ["sentence", "pair", "token"]
    assert [n for n, t in TASKS.items() if t.labeled] == ["sentence", "pair", "token", "qa"]
    assert [n for n, t in TASKS.items() if t.pairs] == ["pair"]
    assert [n for n, t in TASKS.items() if t.spans] == ["qa"]
    assert [n for n, t in TASKS.items() if t.per_word] == ["token"]
    assert [n for n, t in TASKS.items() if t.pooling == "cls"] == ["sentence", "pair"]
    assert task_of("token").metrics == ("entity_f1",)
    with pytest.raises(ValueError, match="task: must be one of sentence, pair, token, qa, none"):
        task_of("regression")


def test_each_shape_loads_with_its_transformers_class():
    from xdistil_ray.modeling.models import auto_class

    names = {name: auto_class(name).__name__ for name in TASKS}
    assert names == {"sentence": "AutoModelForSequenceClassification",
                     "pair": "AutoModelForSequenceClassification",
                     "token": "AutoModelForTokenClassification",
                     "qa": "AutoModelForQuestionAnswering", "none": "AutoModel"}
