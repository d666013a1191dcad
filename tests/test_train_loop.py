import numpy as np
import pytest
import torch

from xdistil_ray.modeling.batches import pad_batch
from xdistil_ray.distill.train_loop import total_steps


class _Shard:
    """A Ray Data shard's iter_torch_batches over rows 0..rows-1, counting its passes."""

    def __init__(self, rows):
        self.rows, self.passes = rows, 0

    def iter_torch_batches(self, batch_size, drop_last, collate_fn, **_):
        self.passes += 1
        for start in range(0, self.rows, batch_size):
            stop = min(start + batch_size, self.rows)
            if stop - start < batch_size and drop_last:
                return
            yield collate_fn({"x": np.arange(start, stop),
                              "ids": np.array([np.arange(i % 3 + 1) for i in range(start, stop)],
                                              dtype=object)})


def _collate(batch):
    return {"x": torch.as_tensor(np.asarray(batch["x"])),
            "n": torch.tensor([len(v) for v in batch["ids"]])}


def test_training_batches_refuse_an_epoch_without_a_full_batch():
    from xdistil_ray.modeling.batches import batches_forever

    shard = _Shard(10)
    gen = batches_forever(shard, 4, 0, _collate, "cpu")
    assert [int(next(gen)["x"][0]) for _ in range(5)] == [0, 4, 0, 4, 0]  # cycles epochs
    assert shard.passes == 3  # no cache: one pass per epoch
    with pytest.raises(RuntimeError, match="less than one batch"):
        next(batches_forever(_Shard(3), 4, 0, _collate, "cpu"))


def test_later_epochs_come_from_the_first_epochs_rows_reshuffled():
    from xdistil_ray.modeling.batches import batches_forever

    shard = _Shard(10)
    gen = batches_forever(shard, 4, 0, _collate, "cpu", cache_bytes=10**6)
    first = [next(gen) for _ in range(2)]  # rows 0-7; rows 8-9 are cached, not trained on
    assert [b["x"].tolist() for b in first] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    epochs = [[next(gen) for _ in range(2)] for _ in range(3)]
    assert shard.passes == 1  # one Ray Data pass in all
    seen = [sorted(torch.cat([b["x"] for b in e]).tolist()) for e in epochs]
    assert all(len(set(s)) == 8 and set(s) <= set(range(10)) for s in seen)
    assert len({tuple(s) for s in seen}) > 1  # each epoch a new shuffle of all ten rows
    for b in (b for e in epochs for b in e):  # the columns stay aligned row by row
        assert (b["n"] == b["x"] % 3 + 1).all()


def test_the_cached_epochs_do_not_depend_on_the_order_the_batches_were_collated_in():
    """Ray collates prefetched batches in threads, which add them to the cache in either order;
    the later epochs must come out the same (the same seed: the same batches) either way."""
    from xdistil_ray.modeling.batches import _RowCache

    def epochs(batch_order):
        cache = _RowCache(10**6)
        for start in batch_order:
            cache.add({"x": np.arange(start, start + 4),
                       "ids": np.array([np.arange(i % 3 + 1) for i in range(start, start + 4)],
                                       dtype=object)})
        cache.close_epoch()
        return [b["x"].tolist() for b in cache.epoch(4, 7, _collate, "cpu")]

    assert epochs([0, 4, 8]) == epochs([8, 0, 4]) == epochs([4, 8, 0])
    assert sorted(x for b in epochs([0, 4, 8]) for x in b) == list(range(12))


def test_rows_over_the_cache_budget_stream_every_epoch():
    from xdistil_ray.modeling.batches import batches_forever

    shard = _Shard(10)
    gen = batches_forever(shard, 4, 0, _collate, "cpu", cache_bytes=100)
    assert [int(next(gen)["x"][0]) for _ in range(6)] == [0, 4, 0, 4, 0, 4]
    assert shard.passes == 3


def test_pad_batch_pads_and_maps_labels():
    batch = {"input_ids": np.array([np.array([101, 7, 102]), np.array([101, 102])], dtype=object),
             "logits": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float16),
             "label": np.array(["pos", "neg"], dtype=object)}
    out = pad_batch(batch, 0, {"neg": 0, "pos": 1})
    assert out["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["teacher_logits"].dtype == torch.float32
    assert out["labels"].tolist() == [1, 0]


def test_total_steps():
    assert total_steps(1000, 1.0, 64, 1) == 16
    assert total_steps(1000, 1.5, 64, 2) == 12
    assert total_steps(10, 0.01, 64, 4) == 1


def test_pad_batch_token_rows():
    from xdistil_ray.modeling.outputs import IGNORE_LABEL

    batch = {"input_ids": np.array([np.array([101, 7, 8, 9, 102]), np.array([101, 5, 102])], dtype=object),
             "token_type_ids": np.array([np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1])], dtype=object),
             "logits": np.array([np.arange(10, dtype=np.float16), np.arange(6, dtype=np.float16)],
                                dtype=object),
             # words: row 0 "ab" = tokens 7, 8 and "c" = 9; row 1 "d" = 5
             "word_ids": np.array([np.array([-1, 0, 0, 1, -1]), np.array([-1, 0, -1])], dtype=object),
             "tags": np.array([np.array(["B", "O"]), np.array(["O"])], dtype=object)}
    out = pad_batch(batch, 0, {"B": 0, "O": 1}, per_token=True)
    assert out["token_type_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]]
    assert out["teacher_logits"].shape == (2, 5, 2)
    assert out["teacher_logits"][1, 2].tolist() == [4.0, 5.0]
    assert out["teacher_logits"][1, 3].tolist() == [0.0, 0.0]
    i = IGNORE_LABEL
    assert out["labels"].tolist() == [[i, 0, i, 1, i], [i, 1, i, i, i]]


def test_steady_rate_from_the_last_attempts_logged_steps():
    from xdistil_ray.distill.train_loop import steady_steps_per_second

    history = [[10, 1.0, 100.0], [20, 0.9, 105.0], [30, 0.8, 110.0],  # first attempt
               [40, 0.7, 200.0], [50, 0.6, 202.0], [60, 0.5, 204.0]]  # resumed from 30
    assert steady_steps_per_second(history, [30]) == 5.0
    assert steady_steps_per_second(history[:3], []) == 2.0
    assert steady_steps_per_second(history[:1], []) is None
    assert steady_steps_per_second([[10, 1.0], [20, 0.5]], []) is None  # older runs: no times


def test_a_preemption_notice_is_acted_on_once_and_only_where_watched():
    """A spot node's notice (Ray Train's PreemptionInfo) asks for one checkpoint at once; the
    same notice again asks for none; on one machine (no watcher) nothing is asked."""
    import time as clock

    from ray.train import PreemptionInfo

    from xdistil_ray.distill.train_loop import PreemptionNotices

    notices = PreemptionNotices(watched=True)
    deadline = int(1000 * (clock.time() + 120))
    info = PreemptionInfo(deadline_ms=deadline, preempted_node_to_ranks={"node-b": [2, 3]})
    line = notices.notice_due(50, info)
    assert line.startswith("preemption notice for 1 node(s), ranks [2, 3], 1")
    assert line.endswith(" s left")
    assert notices.notice_due(55, info) == ""  # acted on already
    later = PreemptionInfo(deadline_ms=deadline + 60_000, preempted_node_to_ranks={"c": [0]})
    assert notices.notice_due(60, later)  # another node's notice
    assert PreemptionNotices(watched=False).notice_due(50, info) == ""
