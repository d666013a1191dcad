"""DeepSpeed ZeRO on two ranks: two real processes on gloo (CPU), the stage trainer as a Ray
Train worker runs it (:class:`xdistil_ray.distill.train_loop.StageTrainer`, :func:`save_student`).

Every other DeepSpeed test in the suite runs one rank (the task runs) or two ZeRO-2 ranks inside
a whole pipeline (the cluster job, the resilience scenario); here two ranks train the same
batches at ZeRO-0 and at ZeRO-3 from the same weights, so that what ZeRO-3 shards and gathers
can be compared, tensor by tensor, with what was never sharded.
"""

import os
import socket

import pytest
import torch

pytestmark = pytest.mark.integration

WORLD = 2
STEPS = 6
"""Steps per stage run: a DeepSpeed checkpoint after step 3, then 3 more."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(rank: int, step: int) -> dict:
    """The batch of ``rank`` at ``step``: the same in every run, another on each rank."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    ids = torch.randint(1000, 8000, (4, 12), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(0, 2, (4,), generator=g)}


def _spec(init: str, zero: int):
    from xdistil_ray.distill.objective import LossSpec
    from xdistil_ray.distill.train_loop import StageSpec

    return StageSpec(name=f"zero{zero}", losses=[LossSpec("labels")], init_path=init,
                     init_in_run=False, run=None, total_steps=STEPS, batch_size=4,
                     learning_rate=2e-3, zero_stage=zero, log_every=1, checkpoint_every=3,
                     seed=0, torch_threads=1)


def _train(trainer, rank: int, first: int, last: int) -> list[float]:
    return [float(trainer.train_step(_batch(rank, step))) for step in range(first, last)]


def _optimizer_state(trainer) -> dict:
    """AdamW's moments and step count per parameter (ZeRO-0: the whole state on every rank)."""
    state = trainer.engine.optimizer.state_dict()["state"]
    return {i: {k: v.clone() for k, v in s.items()} for i, s in state.items()}


def _init_group(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), DS_ACCELERATOR="cpu")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)


def _resume(spec, init: str, ckpt: str, step: int):
    """A new trainer from DeepSpeed checkpoint ``ckpt`` of ``step``, as a worker resumes."""
    from xdistil_ray.distill.checkpoint import DEEPSPEED_TAG, use_safe_loading
    from xdistil_ray.distill.train_loop import StageTrainer

    trainer = StageTrainer(spec, init)
    trainer.build(trainer.phase_for(step - 1), step)
    use_safe_loading(trainer.engine)
    _, client = trainer.engine.load_checkpoint(ckpt, tag=DEEPSPEED_TAG)
    return trainer, client


def _one_rank(rank: int, port: int, init: str, out: str, load: str) -> None:
    """World size 1 at ZeRO-0: without ``load``, trains 3 steps and saves a checkpoint (for two
    ranks to resume); with it, resumes the two ranks' checkpoint and records what it loaded."""
    _init_group(0, 1, port)
    from xdistil_ray.distill.checkpoint import DEEPSPEED_TAG
    from xdistil_ray.distill.train_loop import StageTrainer

    half, spec = STEPS // 2, _spec(init, 0)
    if load:
        trainer, client = _resume(spec, init, load, half)
        torch.save({"optimizer": _optimizer_state(trainer), "client": client,
                    "lr": trainer.learning_rate(), "losses": _train(trainer, 0, half, STEPS)},
                   os.path.join(out, "zero0-2to1.pt"))
    else:
        trainer = StageTrainer(spec, init)
        trainer.build(trainer.phase_for(0), 0)
        _train(trainer, 0, 0, half)
        trainer.engine.save_checkpoint(os.path.join(out, "ckpt-world1"), tag=DEEPSPEED_TAG,
                                       client_state={"step": half})
        torch.save({"optimizer": _optimizer_state(trainer), "lr": trainer.learning_rate()},
                   os.path.join(out, "zero0-world1.pt"))
    torch.distributed.destroy_process_group()


def _worker(rank: int, port: int, init: str, out: str) -> None:
    """One rank: for ZeRO 0 and 3, train STEPS steps (a checkpoint after step 3), export the
    student; then a new trainer resumes from the checkpoint and trains the last steps again."""
    _init_group(rank, WORLD, port)
    from xdistil_ray.distill.checkpoint import DEEPSPEED_TAG, save_student
    from xdistil_ray.distill.train_loop import StageTrainer

    half = STEPS // 2
    for zero in (0, 3):
        spec = _spec(init, zero)
        trainer = StageTrainer(spec, init)
        trainer.build(trainer.phase_for(0), 0)
        losses = _train(trainer, rank, 0, half)
        ckpt = os.path.join(out, f"ckpt-zero{zero}")
        trainer.engine.save_checkpoint(ckpt, tag=DEEPSPEED_TAG, client_state={"step": half})
        saved = _optimizer_state(trainer) if zero == 0 else None
        losses += _train(trainer, rank, half, STEPS)
        save_student(trainer, os.path.join(out, f"zero{zero}-rank{rank}"))
        final = trainer.full_state()  # a collective under ZeRO-3
        trainer.engine = None

        resumed, client = _resume(spec, init, ckpt, half)
        again = _train(resumed, rank, half, STEPS)
        again_final = resumed.full_state()
        if rank == 0:
            torch.save({"losses": losses, "resumed_losses": again, "client": client,
                        "final": final, "resumed_final": again_final, "optimizer": saved},
                       os.path.join(out, f"zero{zero}.pt"))
        resumed.engine = None
        if zero == 0:  # 1 -> 2: the one-rank checkpoint, loaded by both ranks
            one, _ = _resume(spec, init, os.path.join(out, "ckpt-world1"), half)
            torch.save({"optimizer": _optimizer_state(one), "lr": one.learning_rate()},
                       os.path.join(out, f"zero0-1to2-rank{rank}.pt"))
            one.engine = None
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("zero_ranks")
    init = str(root / "init")
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(
        vocab_size=8192, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=64, num_labels=2,
        # no dropout: a DeepSpeed checkpoint holds no RNG state, and a resumed run would draw
        # other masks than the run that went on (losses apart by 0.01-0.03, seen)
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).save_pretrained(init)
    spawn = torch.multiprocessing.spawn
    spawn(_one_rank, args=(_free_port(), init, str(root), ""), nprocs=1, join=True)
    spawn(_worker, args=(_free_port(), init, str(root)), nprocs=WORLD, join=True)
    spawn(_one_rank, args=(_free_port(), init, str(root), str(root / "ckpt-zero0")), nprocs=1,
          join=True)
    return root, init


def _student(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, "model.safetensors"))


def test_zero3_exports_the_weights_gathered_from_both_ranks(two_ranks):
    """ZeRO-3 holds half of each parameter on each rank; the exported student is whole, the
    same on both ranks, and equal to the same training never sharded (ZeRO-0 on the same two
    ranks and batches)."""
    from transformers import AutoModelForSequenceClassification

    root, init = two_ranks
    sharded, plain = _student(root / "zero3-rank0"), _student(root / "zero0-rank0")
    start = AutoModelForSequenceClassification.from_pretrained(init).state_dict()
    assert set(sharded) == set(plain)
    for name, tensor in sharded.items():
        assert torch.equal(tensor, _student(root / "zero3-rank1")[name]), name
        assert tensor.shape == start[name].shape, name  # whole, not a rank's partition
        assert torch.allclose(tensor, plain[name], atol=2e-5, rtol=1e-4), name
    moved = [n for n in sharded if not torch.equal(sharded[n], start[n])]
    assert len(moved) > len(sharded) // 2  # trained, not the initial weights
    model = AutoModelForSequenceClassification.from_pretrained(root / "zero3-rank0")
    assert model.config.num_labels == 2


@pytest.mark.parametrize("zero", [0, 3])
def test_a_two_rank_checkpoint_resumes_where_it_stopped(two_ranks, zero):
    """Resumed from the DeepSpeed checkpoint of step 3 (weights, optimizer state and schedule of
    both ranks), the last steps give the same losses and weights as the run that went on."""
    root, _ = two_ranks
    run = torch.load(root / f"zero{zero}.pt")
    half = STEPS // 2
    assert run["client"]["step"] == half
    assert run["resumed_losses"] == pytest.approx(run["losses"][half:], rel=1e-5, abs=1e-6)
    for name, tensor in run["final"].items():
        assert torch.allclose(tensor, run["resumed_final"][name], atol=1e-6), name
    zero0 = torch.load(root / "zero0.pt")
    assert run["losses"] == pytest.approx(zero0["losses"], rel=1e-4)  # ZeRO-3 trains as ZeRO-0


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for i in a:
        for key in a[i]:
            assert torch.equal(torch.as_tensor(a[i][key]), torch.as_tensor(b[i][key])), (i, key)


def test_a_zero0_checkpoint_resumes_on_another_number_of_workers(two_ranks):
    """2 -> 1 and 1 -> 2 at ZeRO-0: the step count continues with AdamW's moments and steps as
    they were saved (DeepSpeed writes the whole optimizer state once), and the schedule's
    learning rate where it stopped. (ZeRO 1-3 checkpoints on another number of workers are
    refused before any work: tests/test_dry_run.py.)"""
    root, _ = two_ranks
    two, one = torch.load(root / "zero0.pt"), torch.load(root / "zero0-2to1.pt")
    assert one["client"]["step"] == STEPS // 2
    _same_state(two["optimizer"], one["optimizer"])
    assert all(v["step"] == STEPS // 2 for v in one["optimizer"].values())
    assert len(one["losses"]) == STEPS - STEPS // 2
    saved = torch.load(root / "zero0-world1.pt")
    for rank in range(WORLD):
        loaded = torch.load(root / f"zero0-1to2-rank{rank}.pt")
        _same_state(saved["optimizer"], loaded["optimizer"])
        assert loaded["lr"] == pytest.approx(saved["lr"])


def test_a_checkpoint_is_one_copy_at_zero0_and_a_shard_per_rank_at_zero3(two_ranks):
    """ZeRO-0 writes the weights and the optimizer state once (rank 0's one file); ZeRO-3 each
    rank its own shard, half of the state each, the two together the size of ZeRO-0's copy
    (2026-12-07: 7.25 MB against 2 x 3.60 MB of optimizer state + 2 x 23 kB of weights' shards).
    Which bytes each rank of a stage wrote is in the stage's marker and the report
    (tests/test_cluster_integration.py: two ZeRO-2 ranks)."""
    from xdistil_ray.distill.checkpoint import DEEPSPEED_TAG

    root, _ = two_ranks

    def sizes(zero: int) -> dict:
        return {p.name: p.stat().st_size for p in (root / f"ckpt-zero{zero}" / DEEPSPEED_TAG)
                .iterdir()}

    zero0, zero3 = sizes(0), sizes(3)
    assert list(zero0) == ["mp_rank_00_model_states.pt"]
    assert set(zero3) == {f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt"
                          for r in range(WORLD) for kind in ("model", "optim")}
    shard = [sum(v for k, v in zero3.items() if k.startswith(f"zero_pp_rank_{r}_"))
             for r in range(WORLD)]
    assert shard[0] == pytest.approx(shard[1], rel=0.01)
    assert sum(shard) == pytest.approx(zero0["mp_rank_00_model_states.pt"], rel=0.05)
