"""Gradual unfreezing through the real DeepSpeed engine (one process, gloo): at each phase
exactly the scheduled blocks receive gradients and change; the frozen ones stay bit-identical."""

import os
import socket

import pytest
import torch

from xdistil_ray.distill import schedule
from xdistil_ray.distill.objective import LossSpec
from xdistil_ray.distill.train_loop import StageSpec, StageTrainer


def test_phases_unfreeze_top_down_then_embeddings():
    assert schedule.trainable_groups(0, 3) == {"head"}
    assert schedule.trainable_groups(1, 3) == {"head", "block2"}
    assert schedule.trainable_groups(3, 3) == {"head", "block2", "block1", "block0"}
    assert schedule.trainable_groups(4, 3) == schedule.all_groups(3) == {
        "head", "block2", "block1", "block0", "embeddings"}
    assert schedule.phase_length(50, 3, 0) == 10 and schedule.phase_length(50, 3, 4) == 4
    assert [schedule.phase_at(s, 2, 3) for s in range(12)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4]


def test_parameter_groups():
    assert schedule.group_of("student.bert.embeddings.word_embeddings.weight") == "embeddings"
    assert schedule.group_of("student.bert.encoder.layer.11.output.dense.bias") == "block11"
    assert schedule.group_of("student.classifier.weight") == "head"
    assert schedule.group_of("student.bert.pooler.dense.weight") == "head"
    assert schedule.group_of("projections.loss0_s3_t6.weight") == "head"
    assert schedule.group_of("roberta.encoder.layer.0.attention.self.query.weight") == "block0"


@pytest.fixture(scope="module")
def single_process_group():
    os.environ["DS_ACCELERATOR"] = "cpu"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def _spec(model: str, **fields) -> StageSpec:
    """A logits stage of ``model`` for one process: batch 8, LR 1e-2, a report every step."""
    return StageSpec(name="t", losses=[LossSpec("logits")], init_path=model, init_in_run=False,
                     run=None, batch_size=8, learning_rate=1e-2, log_every=1,
                     checkpoint_every=100, seed=0, torch_threads=1, **fields)


def _batch(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(1000, 2000, (8, 6), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "teacher_logits": torch.randn(8, 2, generator=g) * 3}


def _groups(trainer) -> dict[str, dict[str, torch.Tensor]]:
    out: dict = {}
    for name, p in trainer.engine.module.named_parameters():
        out.setdefault(schedule.group_of(name), {})[name] = p.detach().clone()
    return out


def _gathered(trainer) -> dict[str, dict[str, torch.Tensor]]:
    """Under ZeRO-3 the module holds partitions: compare full weights."""
    out: dict = {}
    for name, value in trainer.full_state().items():
        out.setdefault(schedule.group_of(name), {})[name] = value
    return out


@pytest.mark.parametrize("zero_stage", [0, 2, 3])
def test_each_phase_trains_exactly_its_blocks(single_process_group, tiny_classifier_dir, zero_stage):
    steps_per_phase = 2
    spec = _spec(tiny_classifier_dir, total_steps=5 * steps_per_phase, zero_stage=zero_stage,
                 unfreeze_steps=steps_per_phase)
    trainer = StageTrainer(spec, tiny_classifier_dir)
    assert trainer.num_blocks == 3
    seen_phases = []
    gather = _gathered if zero_stage == 3 else _groups
    for step in range(spec.total_steps):
        phase = trainer.phase_for(step)
        if phase != trainer.phase:
            trainer.build(phase, step)
            seen_phases.append(phase)
        expected = schedule.trainable_groups(phase, 3)
        before = gather(trainer)
        loss, _ = trainer.loss(_batch(step))
        trainer.engine.backward(loss)
        if zero_stage == 0:  # gradients stay on the parameters until the step
            with_grad = {schedule.group_of(n) for n, p in trainer.engine.module.named_parameters()
                         if p.grad is not None and p.grad.abs().sum() > 0}
            assert with_grad == expected, (phase, with_grad)
        trainer.engine.step()
        after = gather(trainer)
        for group, params in before.items():
            changed = any(not torch.equal(params[n], after[group][n]) for n in params)
            if group in expected:
                assert changed, (phase, group)
            else:
                assert all(torch.equal(params[n], after[group][n]) for n in params), (phase, group)
    assert seen_phases == [0, 1, 2, 3, 4]


def test_learning_rate_schedule_continues_across_rebuilds(single_process_group, tiny_classifier_dir):
    spec = _spec(tiny_classifier_dir, total_steps=20, zero_stage=1, unfreeze_steps=4)
    trainer = StageTrainer(spec, tiny_classifier_dir)
    trainer.build(0, 0)
    first = trainer.engine.get_lr()[0]
    trainer.build(3, 12)  # warmup 2 steps, then linear decay to 0 after the last step
    assert first == pytest.approx(1e-2 / 2)
    assert trainer.engine.get_lr()[0] == pytest.approx(1e-2 * (21 - 13) / (21 - 2), rel=1e-6)


def test_a_rebuild_with_given_weights_takes_them_not_the_current_ones(single_process_group,
                                                                      tiny_classifier_dir):
    """The stage's end goes back to its best epoch through ``build(phase, step, best)``: the
    engine already exists, and the weights given must win over the ones trained since (they
    were dropped silently: the report named the kept epoch, the student had the last one's)."""
    spec = _spec(tiny_classifier_dir, total_steps=6, zero_stage=0)
    trainer = StageTrainer(spec, tiny_classifier_dir)
    trainer.build(trainer.last_phase, 0)
    trainer.train_step(_batch(0))
    best = trainer.full_state()
    for step in (1, 2):
        trainer.train_step(_batch(step))
    assert any(not torch.equal(best[k], v) for k, v in trainer.full_state().items())
    trainer.build(trainer.phase, 3, best)
    assert all(torch.equal(best[k], v) for k, v in trainer.full_state().items())


def test_restore_mid_stage_rebuilds_the_phase_and_continues(single_process_group,
                                                             tiny_classifier_dir, tmp_path):
    spec = _spec(tiny_classifier_dir, total_steps=10, zero_stage=2, unfreeze_steps=2)
    first = StageTrainer(spec, tiny_classifier_dir)
    for step in range(5):  # phases 0, 0, 1, 1, 2
        if first.phase_for(step) != first.phase:
            first.build(first.phase_for(step), step)
        first.train_step(_batch(step))
    first.engine.save_checkpoint(str(tmp_path), tag="ds")
    saved = first.full_state()
    second = StageTrainer(spec, tiny_classifier_dir)
    second.build(second.phase_for(5 - 1), 5)
    second.engine.load_checkpoint(str(tmp_path), tag="ds")
    restored = second.full_state()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)
    assert second.engine.get_lr() == first.engine.get_lr()
    for trainer in (first, second):  # the same next step from the same state (and dropout)
        torch.manual_seed(123)
        trainer.train_step(_batch(5))
    a, b = first.full_state(), second.full_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_zero3_stage_end_saves_a_consolidated_student(single_process_group, tiny_classifier_dir,
                                                      tmp_path):
    from transformers import AutoModelForSequenceClassification

    from xdistil_ray.distill.checkpoint import save_student

    spec = _spec(tiny_classifier_dir, total_steps=2, zero_stage=3,
                 tokenizer_path=tiny_classifier_dir)
    trainer = StageTrainer(spec, tiny_classifier_dir)
    trainer.build(trainer.phase_for(0), 0)
    for step in range(2):
        trainer.train_step(_batch(step))
    save_student(trainer, str(tmp_path / "model"))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "model"))
    trained = {k[len("student."):]: v for k, v in trainer.full_state().items()
               if k.startswith("student.")}
    state = loaded.state_dict()
    assert set(trained) <= set(state)
    assert all(torch.equal(trained[k], state[k]) for k in trained)
    original = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).state_dict()
    assert not torch.equal(original["classifier.weight"], state["classifier.weight"])


def test_resume_on_another_world_size_starts_from_the_saved_module(single_process_group,
                                                                   tiny_classifier_dir):
    spec = _spec(tiny_classifier_dir, total_steps=6, zero_stage=2)
    first = StageTrainer(spec, tiny_classifier_dir)
    first.build(first.phase_for(0), 0)
    for step in range(3):
        first.train_step(_batch(step))
    saved = first.full_state()
    second = StageTrainer(spec, tiny_classifier_dir)
    second.build(second.phase_for(2), 3, saved)
    assert all(torch.equal(saved[k], v) for k, v in second.full_state().items())
    assert second.engine.get_lr() == first.engine.get_lr()
    second.train_step(_batch(3))  # the optimizer works from the restored weights
    assert not all(torch.equal(saved[k], v) for k, v in second.full_state().items())


def test_single_rank_zero0_skips_the_gradient_all_reduce_with_the_same_result(
        single_process_group, tiny_classifier_dir):
    """One rank: the engine skips DeepSpeed's flatten / all-reduce / copy-back of every gradient,
    and trains exactly as with it."""
    spec = _spec(tiny_classifier_dir, total_steps=6, zero_stage=0)
    states = []
    for skip in (True, False):
        trainer = StageTrainer(spec, tiny_classifier_dir)
        trainer.build(trainer.phase_for(0), 0)
        assert trainer.engine.enable_backward_allreduce is False  # what build chose
        trainer.engine.enable_backward_allreduce = not skip
        torch.manual_seed(7)
        for step in range(6):
            trainer.train_step(_batch(step))
        states.append(trainer.full_state())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_every_rank_writes_a_loadable_student(single_process_group, tiny_classifier_dir, tmp_path,
                                               monkeypatch):
    """The next stage starts from each rank's own copy of the last stage's student: a rank other
    than 0 must write a whole folder too (transformers' save_pretrained writes only on rank 0
    when a process group is up)."""
    from transformers import AutoModelForSequenceClassification

    from xdistil_ray.distill.checkpoint import save_student

    spec = _spec(tiny_classifier_dir, total_steps=1, zero_stage=0)
    trainer = StageTrainer(spec, tiny_classifier_dir)
    trainer.build(trainer.phase_for(0), 0)
    trainer.train_step(_batch(0))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: 1)
    save_student(trainer, str(tmp_path / "rank1"))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rank1"))
    trained = {k[len("student."):]: v for k, v in trainer.full_state().items()
               if k.startswith("student.")}
    assert all(torch.equal(trained[k], loaded.state_dict()[k]) for k in trained)


def test_deepspeed_on_cpu_starts_without_compiling_its_shm_op(single_process_group,
                                                              tiny_classifier_dir):
    """DeepSpeed's CPU backend would JIT-compile a shared-memory all-reduce (g++, a minute or
    more of both CPUs here) that training never uses; the engine starts without it."""
    import deepspeed.comm.comm as ds_comm

    spec = _spec(tiny_classifier_dir, total_steps=2, zero_stage=2)
    trainer = StageTrainer(spec, tiny_classifier_dir)
    trainer.build(trainer.phase_for(0), 0)
    trainer.train_step(_batch(0))
    assert ds_comm.cdb is not None and ds_comm.cdb.shm_comm_op is None


@pytest.mark.parametrize("kind", ["bert", "modernbert"])
def test_frozen_word_embeddings_stay_bit_identical(single_process_group, tmp_path, kind):
    """student.freeze_word_embeddings: the word table (ModernBERT's is `tok_embeddings`) does
    not move, bit for bit, while the rest trains."""
    from test_families import tiny_teacher

    folder = str(tmp_path / kind)
    tiny_teacher(kind).save_pretrained(folder)
    trainer = StageTrainer(_spec(folder, total_steps=4, zero_stage=0,
                                 freeze_word_embeddings=True), folder)
    trainer.build(trainer.phase_for(0), 0)
    words = [n for n in trainer.never if "embeddings" in n]
    assert len(words) == 1, trainer.never
    before = {n: p.detach().clone() for n, p in trainer.engine.module.named_parameters()}
    for step in range(4):
        loss, _ = trainer.loss(_batch(step))
        trainer.engine.backward(loss)
        trainer.engine.step()
    after = dict(trainer.engine.module.named_parameters())
    assert torch.equal(after[words[0]].detach(), before[words[0]])
    moved = [n for n in before if not torch.equal(after[n].detach(), before[n])]
    assert any("layer" in n for n in moved), moved


@pytest.mark.parametrize("zero_stage", [0, 1, 2, 3])
def test_checkpoints_load_without_unpickling_arbitrary_objects(single_process_group,
                                                               tiny_classifier_dir, tmp_path,
                                                               zero_stage):
    """Resuming reads DeepSpeed's files with weights_only=True (tensors, containers and three
    DeepSpeed classes): every ZeRO stage's checkpoint loads whole, and a file replaced by one
    whose unpickling would run a command is refused instead of run."""
    import glob
    import pickle

    from xdistil_ray.distill.checkpoint import use_safe_loading

    spec = _spec(tiny_classifier_dir, total_steps=6, zero_stage=zero_stage)
    first = StageTrainer(spec, tiny_classifier_dir)
    first.build(first.phase_for(0), 0)
    for step in range(2):
        first.train_step(_batch(step))
    first.engine.save_checkpoint(str(tmp_path), tag="ds", client_state={"step": 2})
    second = StageTrainer(spec, tiny_classifier_dir)
    second.build(second.phase_for(1), 2)
    use_safe_loading(second.engine)
    second.engine.load_checkpoint(str(tmp_path), tag="ds")
    saved, restored = first.full_state(), second.full_state()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    for path in glob.glob(str(tmp_path / "ds" / "*.pt")):
        with open(path, "wb") as f:
            pickle.dump({"module": Payload()}, f)
    third = StageTrainer(spec, tiny_classifier_dir)
    third.build(third.phase_for(1), 2)
    use_safe_loading(third.engine)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        third.engine.load_checkpoint(str(tmp_path), tag="ds")
    assert not (tmp_path / "pwned").exists()
