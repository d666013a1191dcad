import pytest

from xdistil_ray.config import Config
from xdistil_ray.config import ConfigError
from xdistil_ray.config import load_config


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_are_the_embedded_run():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.corpus.path == "embedded" and cfg.teacher.model == "embedded"
    assert [[loss.type for loss in s.losses] for s in cfg.stages] == [
        ["representation"], ["logits"], ["labels"]]
    assert [s.unfreeze for s in cfg.stages] == ["none", "gradual", "gradual"]


def test_file_then_overrides_take_precedence(tmp_path):
    path = _write(tmp_path, "output: /tmp/x\ncorpus:\n  max_length: 32\ntrain:\n  zero_stage: 2\n")
    cfg = load_config(path, ["corpus.max_length=48", "stages.1.epochs=0.5", "teacher.model=bert-base"])
    assert cfg.output == "/tmp/x"
    assert cfg.corpus.max_length == 48
    assert cfg.train.zero_stage == 2
    assert cfg.stages[1].epochs == 0.5
    assert cfg.teacher.model == "bert-base"
    assert cfg.corpus.rows_per_shard == Config().corpus.rows_per_shard


def test_stage_list_from_file_replaces_defaults(tmp_path):
    path = _write(tmp_path, "stages:\n  - {name: only, losses: [{type: logits}], epochs: 2}\n")
    cfg = load_config(path)
    assert len(cfg.stages) == 1 and cfg.stages[0].name == "only" and cfg.stages[0].batch_size == 64


def test_exponent_without_dot_is_a_number(tmp_path):
    # PyYAML reads 1e-4 (no dot) as a string; users write it on the command line and in files
    cfg = load_config(_write(tmp_path, "teacher:\n  finetune:\n    learning_rate: 3e-5\n"),
                      ["stages.0.learning_rate=1e-4"])
    assert cfg.teacher.finetune.learning_rate == 3e-5 and cfg.stages[0].learning_rate == 1e-4
    with pytest.raises(ConfigError, match="stages.0.learning_rate: expected a number"):
        load_config(None, ["stages.0.learning_rate=fast"])


def test_int_accepted_for_float():
    assert load_config(None, ["teacher.finetune.epochs=2"]).teacher.finetune.epochs == 2.0


@pytest.mark.parametrize("override, field", [
    ("corpus.max_lenght=3", "corpus.max_lenght"),
    ("nonsense=1", "nonsense"),
    ("stages.0.lossy=logits", "stages.0.lossy"),
    ("stages.0.losses.0.wieght=2", "stages.0.losses.0.wieght"),
])
def test_unknown_key_names_field_and_valid_keys(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert field in str(e.value) and "valid keys" in str(e.value)


def test_unknown_key_in_file_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"'teacher.modle'.*valid keys: finetune, inference, model"):
        load_config(_write(tmp_path, "teacher:\n  modle: x\n"))


@pytest.mark.parametrize("override, message", [
    ("corpus.max_length=long", "corpus.max_length: expected an integer"),
    ("corpus.max_length=1.5", "corpus.max_length: expected an integer"),
    ("train.use_gpu=maybe", "train.use_gpu: expected true or false"),
    ("stages.0.learning_rate=fast", "stages.0.learning_rate: expected a number"),
    ("corpus=5", "corpus: expected a mapping"),
    ("stages=3", "stages: expected a list"),
    ("stages.7.epochs=1", "stages.7: list index must be 0..2"),
])
def test_wrong_type_names_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("override, message", [
    ("stages.0.losses.0.type=magic", "stages.0.losses.0.type: must be one of"),
    ("stages.0.losses.0.type=attention_relations", "set the stage's targets: online"),
    ("stages.0.losses.0.last_k=2", "stages.0.losses.0.layer_map: stored targets"),
    ("stages.1.unfreeze=sometimes", "stages.1.unfreeze: must be none or gradual"),
    ("stages.1.losses.0.function=l1", "stages.1.losses.0.function"),
    ("task=ner", "task: must be one of"),
    ("student.init=pretrained", "student.pretrained: give"),
    ("student.teacher_layers=[1,2]", "student.teacher_layers: give one teacher block per"),
    ("train.zero_stage=4", "train.zero_stage"),
    ("student.hidden_size=130", "student.hidden_size: must be a multiple"),
    ("corpus.heldout_fraction=0.9", "corpus.heldout_fraction"),
    ("labeled.dev_fraction=0.5", "labeled.dev_fraction: must be in \\[0, 0.5\\)"),
    ("student.init=pretty", "student.init"),
    ("teacher.inference.dtype=half", "teacher.inference.dtype: 'half' is not one of"),
    ("teacher.inference.group_batches=0", "teacher.inference.group_batches"),
    ("teacher.inference.top_k=-1", "teacher.inference.top_k: must be >= 0"),
    ("qa.max_windows=0", "qa.max_windows: must be at least 1"),
])
def test_bad_value_names_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


def test_override_without_equals():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["corpus.path"])


def test_shipped_configs_parse_and_fit_the_embedded_teacher(teacher_path):
    import glob

    from xdistil_ray.pipelines.inputs import check_models

    from xdistil_ray.config import FinetuneJob

    paths = glob.glob("jobs/configs/*.yaml") + glob.glob("tests/configs/*.yaml")
    names = {p.rsplit("/", 1)[1] for p in paths}
    assert {"three_stage.yaml", "od.yaml", "hs.yaml", "mha.yaml", "task_agnostic.yaml",
            "finetune.yaml"} <= names
    for path in paths:
        if path.endswith("/finetune.yaml"):  # jobs/finetune.py's config
            assert load_config(path, kind=FinetuneJob).model == "runs/agnostic/student"
        else:
            check_models(load_config(path), teacher_path)


def _data(kept=100, heldout=10, labels=("neg", "pos"), labeled_kept=50):
    """A data step's marker with these counts."""
    from xdistil_ray.run.markers import CorpusStats, DataMarker, LabeledData, SplitStats

    return DataMarker(
        corpus=CorpusStats(input_rows=kept + 5, kept=kept, shards=[], heldout=heldout,
                           dropped={"empty": 5}),
        labeled=LabeledData({"train": SplitStats(labeled_kept, labeled_kept, [])}, list(labels)))


def test_prepared_data_that_cannot_feed_the_stages_is_refused():
    from xdistil_ray.pipelines.inputs import check_data

    cfg = load_config()
    check_data(cfg, _data(kept=1000, labeled_kept=500))
    with pytest.raises(ConfigError, match="no sentence survived cleaning"):
        check_data(cfg, _data(kept=0, heldout=0))
    with pytest.raises(ConfigError, match="at least 2 classes"):
        check_data(cfg, _data(kept=1000, labels=("pos",)))
    with pytest.raises(ConfigError, match="stages.0.batch_size: 40 training rows"):
        check_data(cfg, _data(kept=50, heldout=10))
    top3 = load_config(None, ["teacher.inference.top_k=3"])
    check_data(top3, _data(kept=1000, labeled_kept=500, labels=("a", "b", "c", "d")))
    with pytest.raises(ConfigError, match="teacher.inference.top_k: 3 is not below the 3 labels"):
        check_data(top3, _data(kept=1000, labeled_kept=500, labels=("a", "b", "c")))


def test_two_attention_relation_losses_in_one_stage_are_refused(tmp_path):
    path = _write(tmp_path, "stages:\n  - name: a\n    targets: online\n    losses:\n"
                            "      - {type: attention_relations}\n"
                            "      - {type: attention_relations, teacher_layer: 3}\n")
    with pytest.raises(ConfigError, match="stages.0.losses: one attention_relations loss"):
        load_config(path)


def test_task_agnostic_refuses_head_losses():
    with pytest.raises(ConfigError, match="stages.1.losses.0.type: task none has no head"):
        load_config(None, ["task=none"])


def test_layer_mapping_is_checked_against_the_models(teacher_path):
    from xdistil_ray.pipelines.inputs import check_models

    cfg = load_config(None, ["stages.0.targets=online", "stages.0.losses.0.type=hidden_states",
                             "stages.0.losses.0.layer_map=explicit",
                             "stages.0.losses.0.layers=[[4, 6], [2, 9]]"])
    with pytest.raises(ConfigError, match="stages.0.losses: teacher layer 9 does not exist"):
        check_models(cfg, teacher_path)
    cfg = load_config(None, ["stages.0.targets=online", "stages.0.losses.0.type=attention_relations",
                             "stages.0.losses.0.relation_heads=5"])
    with pytest.raises(ConfigError, match="relation_heads 5 does not divide"):
        check_models(cfg, teacher_path)
    shapes = check_models(load_config(), teacher_path)
    assert (shapes.teacher_layers, shapes.teacher_hidden, shapes.student_layers) == (6, 384, 4)


def test_student_with_another_vocabulary_is_refused(tmp_path, teacher_path):
    from transformers import BertConfig, BertModel

    from xdistil_ray.pipelines.inputs import check_models

    BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path)
    cfg = load_config(None, ["student.init=pretrained", f"student.pretrained={tmp_path}"])
    with pytest.raises(ConfigError, match="vocabulary of 1000 tokens but the teacher's tokenizer "
                                          "has 30522"):
        check_models(cfg, teacher_path)


def test_custom_resources_are_typed_and_checked():
    cfg = load_config(None, ["teacher.inference.resources={teacher_gpu: 0.5}",
                             "train.resources_per_worker={train_gpu: 1}"])
    assert cfg.teacher.inference.resources == {"teacher_gpu": 0.5}
    assert cfg.train.resources_per_worker == {"train_gpu": 1.0}
    with pytest.raises(ConfigError, match="teacher.inference.resources.GPU"):
        load_config(None, ["teacher.inference.resources={GPU: 1}"])
    with pytest.raises(ConfigError, match="train.resources_per_worker.x: must be > 0"):
        load_config(None, ["train.resources_per_worker={x: 0}"])
    with pytest.raises(ConfigError, match="train.resources_per_worker: expected a mapping"):
        load_config(None, ["train.resources_per_worker=3"])


def test_top_k_refused_for_token_tasks():
    with pytest.raises(ConfigError, match="teacher.inference.top_k: token tasks"):
        load_config(None, ["task=token", "teacher.inference.top_k=3"])


def test_a_task_default_sits_under_the_file_and_the_overrides(tmp_path):
    from xdistil_ray.config import TASK_DEFAULTS

    qa = load_config(None, ["task=qa"])
    assert (qa.student.num_layers, qa.student.hidden_size, qa.student.num_heads,
            qa.student.intermediate_size) == (4, 384, 12, 1536)
    assert TASK_DEFAULTS["qa"]["student"]["hidden_size"] == 384  # loading did not change it
    assert qa.train.min_stage_steps == 0 and load_config(None, []).train.min_stage_steps == 1000
    assert load_config(None, ["task=qa", "train.min_stage_steps=500"]).train.min_stage_steps == 500
    assert load_config(None, ["task=sentence"]).student.hidden_size == 128
    path = tmp_path / "qa.yaml"
    path.write_text("task: qa\nstudent: {num_layers: 2}\n")
    cfg = load_config(str(path), ["student.hidden_size=192"])
    assert (cfg.student.num_layers, cfg.student.hidden_size, cfg.student.num_heads) == (2, 192, 12)
    path.write_text("task: qa\n")
    assert load_config(str(path), ["task=sentence"]).student.hidden_size == 128  # the last word


def test_a_stage_on_a_small_transfer_set_takes_at_least_min_stage_steps():
    """3,000 transfer rows at batch 64 are 45 steps an epoch: the corpus stages take
    train.min_stage_steps instead; the labels stage keeps its epochs."""
    from xdistil_ray.distill import stage_plan

    data = _data(kept=3000, heldout=150, labeled_kept=640)
    cfg = load_config(None, [])
    assert [stage_plan.stage_steps(cfg, k, data) for k in range(3)] == [1000, 1000, 20]
    cfg = load_config(None, ["train.min_stage_steps=0"])
    assert [stage_plan.stage_steps(cfg, k, data) for k in range(3)] == [45, 45, 20]
    data.corpus.kept = 128_150  # a large corpus: its epochs decide
    assert stage_plan.stage_steps(load_config(None, []), 0, data) == 2000


@pytest.mark.parametrize("raw", ["012", "0x1F", "1e3", "no", "2026-12-07", "null", "007"])
def test_a_string_field_takes_the_override_as_typed(raw):
    """YAML read ``teacher.model=012`` as the octal 10 and ``0x1F`` as 31 before the field's
    type was known; a string field keeps the text."""
    assert load_config(None, [f"teacher.model={raw}"]).teacher.model == raw
    assert load_config(None, [f"stages.0.name={raw}"]).stages[0].name == raw


def test_typed_fields_still_parse_their_overrides():
    cfg = load_config(None, ["teacher.model='quoted'", "corpus.max_length=0x40",
                             "train.use_gpu=no", "stages.0.learning_rate=1e-3"])
    assert cfg.teacher.model == "quoted" and cfg.corpus.max_length == 64
    assert cfg.train.use_gpu is False and cfg.stages[0].learning_rate == 1e-3
