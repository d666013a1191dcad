import numpy as np
import torch

from xdistil_ray.modeling.models import load_classifier
from xdistil_ray.teacher.step import TeacherInference
from xdistil_ray.teacher.shards import _to_arrow


def test_callable_on_numpy_batch_matches_unpadded_forward(tiny_classifier_dir):
    infer = TeacherInference(tiny_classifier_dir, ("logits", "hidden"), device="cpu")
    rows = [np.array([101, 2023, 2003, 102], dtype=np.int32), np.array([101, 7592, 102], dtype=np.int32),
            np.array([101] + [2000] * 20 + [102], dtype=np.int32)]
    batch = {"id": np.array([7, 8, 9]), "input_ids": np.array(rows, dtype=object)}
    out = infer(batch)
    assert list(out["id"]) == [7, 8, 9]
    assert out["logits"].shape == (3, 2) and out["logits"].dtype == np.float16
    assert out["hidden"].shape == (3, 48) and out["hidden"].dtype == np.float16
    model = load_classifier(tiny_classifier_dir).eval()
    with torch.inference_mode():  # row by row, no padding: padding must not change the outputs
        for i, r in enumerate(rows):
            ref = model(input_ids=torch.as_tensor(r[None], dtype=torch.long), output_hidden_states=True)
            np.testing.assert_allclose(out["logits"][i], ref.logits[0].numpy(), atol=2e-3)
            np.testing.assert_allclose(out["hidden"][i], ref.hidden_states[-1][0, 0].numpy(), atol=5e-3)


def test_only_requested_outputs(tiny_classifier_dir):
    out = TeacherInference(tiny_classifier_dir, ("logits",), device="cpu")(
        {"input_ids": np.array([np.array([101, 102])], dtype=object)})
    assert "hidden" not in out and out["logits"].shape == (1, 2)


def test_outputs_stored_as_portable_fixed_size_lists():
    import pyarrow as pa

    table = _to_arrow(pa.table({"id": [1, 2], "logits": [[0.5, 1.0], [2.0, -1.0]]}))
    assert table.schema.field("logits").type == pa.list_(pa.float16(), 2)
    assert table.column("logits").to_pylist() == [[0.5, 1.0], [2.0, -1.0]]


def test_ray_tensor_columns_become_plain_lists():
    """Ray turns ragged numpy columns into its own extension type; parquet readers without Ray
    would see structs. The sink must write plain lists."""
    import pyarrow as pa
    from ray.data.block import BlockAccessor

    batch = {"id": np.array([1, 2]),
             "input_ids": np.array([np.array([101, 5, 102]), np.array([101, 102])], dtype=object),
             "logits": np.array([[0.5, 1.0], [2.0, -1.0]], dtype=np.float16)}
    block = BlockAccessor.batch_to_block(batch)
    table = _to_arrow(block)
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.column("input_ids").to_pylist() == [[101, 5, 102], [101, 102]]
    assert table.schema.field("logits").type == pa.list_(pa.float16(), 2)


def test_token_task_keeps_outputs_for_real_tokens_only(tmp_path, teacher_path):
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=3)
    BertForTokenClassification(config).save_pretrained(tmp_path)
    infer = TeacherInference(str(tmp_path), ("logits", "hidden"), task="token", device="cpu")
    rows = [np.array([101, 2023, 2003, 102]), np.array([101, 102])]
    out = infer({"input_ids": np.array(rows, dtype=object),
                 "token_type_ids": np.array([np.zeros(4), np.zeros(2)], dtype=object)})
    assert [len(v) for v in out["logits"]] == [4 * 3, 2 * 3]
    assert [len(v) for v in out["hidden"]] == [4 * 32, 2 * 32]
    model = BertForTokenClassification.from_pretrained(str(tmp_path)).eval()
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor([[101, 102]])).logits[0].numpy()
    np.testing.assert_allclose(out["logits"][1].reshape(2, 3), ref, atol=2e-3)
    from ray.data.block import BlockAccessor

    table = _to_arrow(BlockAccessor.batch_to_block(out), per_token=True)
    assert table.schema.field("logits").type == pa_list_f16()


def pa_list_f16():
    import pyarrow as pa

    return pa.list_(pa.float16())


def _ragged(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [np.array([101] + list(rng.integers(1000, 2000, n - 2)) + [102], dtype=np.int32)
            for n in lengths]


def _review_rows(teacher: str, count: int, seed: int = 0) -> np.ndarray:
    """Real sentences of mixed lengths, tokenized by the teacher's tokenizer."""
    import random

    from xdistil_ray.data.embedded_reviews import review
    from xdistil_ray.modeling.models import load_tokenizer

    tok, rng = load_tokenizer(teacher), random.Random(seed)
    texts = [review(rng, k % 2 == 0) + " and more words" * (k % 5) for k in range(count)]
    return np.array([np.array(ids, dtype=np.int32) for ids in tok(texts)["input_ids"]],
                    dtype=object)


def _spread_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference of ``b`` from ``a`` over the largest deviation of ``a``'s rows from
    their mean: well under 1 for the same rows, about 1 or more for other rows or zeros."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    return float(np.abs(a - b).max() / np.abs(a - a.mean(0)).max())


def test_window_sorted_by_length_pads_less_and_keeps_row_order(tiny_classifier_dir,
                                                               teacher_with_head):
    """A window of mixed lengths cut into forward batches after sorting: outputs stay with
    their rows, and padding is a small share of the positions run. The real teacher's outputs
    differ between sentences (a tiny random model's hardly do), so rows out of order fail:
    measured ratios to the rows' spread (3 seeds of 16 sentences), rows in order 0 (logits) and
    under 3e-6 (states), the same outputs one row off 1.50-1.62 and 1.30-1.44."""
    lengths = [5, 30, 6, 29, 7, 31, 5, 30] * 4
    rows = _ragged(lengths)
    batch = {"id": np.arange(len(rows)), "input_ids": np.array(rows, dtype=object)}
    grouped = TeacherInference(tiny_classifier_dir, ("logits",), device="cpu", batch_size=4)
    grouped(batch)
    real, run = grouped.padding
    assert real == sum(lengths) and (run - real) / run < 0.05
    rows = _review_rows(teacher_with_head, 16)
    sorted_out = TeacherInference(teacher_with_head, ("logits", "hidden"), device="cpu",
                                  batch_size=4)({"input_ids": rows})
    unsorted = TeacherInference(teacher_with_head, ("logits", "hidden"), device="cpu",
                                batch_size=4)
    for key in ("logits", "hidden"):
        one_by_one = np.concatenate([unsorted({"input_ids": rows[i:i + 1]})[key]
                                     for i in range(len(rows))])
        assert _spread_ratio(one_by_one, sorted_out[key]) < 0.01, key
        assert _spread_ratio(one_by_one, np.roll(sorted_out[key], 1, axis=0)) > 0.5, key
    assert (unsorted.padding[1] - unsorted.padding[0]) / unsorted.padding[1] == 0  # batch 1


def test_teacher_runs_scaled_dot_product_attention(tiny_classifier_dir):
    infer = TeacherInference(tiny_classifier_dir, ("logits",), device="cpu")
    assert infer.model.config._attn_implementation == "sdpa"
    assert infer.dtype == torch.float32  # auto on CPU


def test_precision_choice():
    from xdistil_ray.teacher.step import resolve_dtype

    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    if torch.cuda.is_available():
        assert resolve_dtype("auto", torch.device("cuda")) in (torch.bfloat16, torch.float16)


def test_bf16_teacher_close_to_fp32(teacher_with_head):
    """The teacher in bf16 (its weights too) against fp32 on real sentences, measured against
    the spread of the outputs across rows. Measured (6 seeds of the untrained head x 2 seeds of
    8 sentences, CPU): logits 0.007-0.025 of the spread, last-layer states 0.020-0.051;
    all-zeros outputs 1.09-2.11 (logits) and 5.5-6.7 (states), rows one off 1.14-1.91 and
    1.3-1.5. The bound, 0.2, is 4x the worst measured and fails both. The fixture's head is
    seeded (0; these rows: zeros 1.57, rows one off 1.59): unseeded, CI drew a head whose
    all-zeros ratio was 0.92."""
    rows = _review_rows(teacher_with_head, 8, seed=1)
    fp32 = TeacherInference(teacher_with_head, ("logits", "hidden"), device="cpu")(
        {"input_ids": rows})
    teacher = TeacherInference(teacher_with_head, ("logits", "hidden"), device="cpu",
                               dtype="bfloat16")
    assert {p.dtype for p in teacher.model.parameters()} == {torch.bfloat16}
    bf16 = teacher({"input_ids": rows})
    for key in ("logits", "hidden"):
        assert bf16[key].dtype == np.float16  # stored fp16 either way
        assert _spread_ratio(fp32[key], bf16[key]) < 0.2, key
        assert _spread_ratio(fp32[key], np.zeros_like(bf16[key])) > 1.0, key
        assert _spread_ratio(fp32[key], np.roll(bf16[key], 1, axis=0)) > 1.0, key


def test_top_k_logits_rebuild_the_teachers_probabilities():
    from xdistil_ray.modeling.outputs import dense_logits
    from xdistil_ray.teacher.step import top_k_logits

    torch.manual_seed(0)
    logits = torch.randn(5, 50) * 3
    stored = top_k_logits(logits, 8)
    assert stored["logits_topk"].shape == (5, 8) and stored["logits_topk"].dtype == np.float16
    assert stored["logits_index"].dtype == np.int32 and stored["logits_rest"].shape == (5,)
    dense = torch.from_numpy(dense_logits(stored["logits_topk"], stored["logits_index"],
                                          stored["logits_rest"], 50))
    p, q = logits.softmax(-1), dense.softmax(-1)
    top = logits.topk(8, -1).indices
    torch.testing.assert_close(q.gather(-1, top), p.gather(-1, top), atol=2e-3, rtol=1e-2)
    rest_p = 1 - p.gather(-1, top).sum(-1)
    rest_q = 1 - q.gather(-1, top).sum(-1)
    torch.testing.assert_close(rest_q, rest_p, atol=2e-3, rtol=1e-2)
    assert torch.equal(dense.argmax(-1), logits.argmax(-1))


def test_top_k_columns_through_the_sink_and_the_collate(tmp_path, teacher_path):
    """A 40-label teacher stored top-5: the parquet part holds the compact columns; the
    training collate rebuilds [B, 40] targets whose argmax is the teacher's."""
    import pyarrow as pa
    from ray.data.block import BlockAccessor
    from transformers import BertConfig, BertForSequenceClassification

    from xdistil_ray.modeling.batches import PadCollate

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=40)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    rows = np.array(_ragged([6, 12, 9]), dtype=object)
    full = TeacherInference(str(tmp_path), ("logits",), device="cpu")({"input_ids": rows})
    out = TeacherInference(str(tmp_path), ("logits",), device="cpu", top_k=5)(
        {"id": np.arange(3), "input_ids": rows})
    assert "logits" not in out
    table = _to_arrow(BlockAccessor.batch_to_block(out))
    assert table.schema.field("logits_topk").type == pa.list_(pa.float16(), 5)
    assert table.schema.field("logits_index").type == pa.list_(pa.int32(), 5)
    assert table.schema.field("logits_rest").type == pa.float16()
    columns = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    batch = PadCollate(0, [f"l{i}" for i in range(40)], False)(columns)
    assert batch["teacher_logits"].shape == (3, 40)
    assert batch["teacher_logits"].argmax(-1).tolist() == full["logits"].argmax(-1).tolist()


def test_top_k_columns_read_back_as_lists_become_dense_logits():
    """The evaluation reads stored columns as Python lists; the same rebuild applies."""
    from xdistil_ray.modeling.outputs import with_dense_logits

    rows = {"input_ids": [[101, 102], [101, 5, 102]],
            "logits_topk": [[4.0, 1.0], [3.0, 2.5]], "logits_index": [[2, 0], [1, 3]],
            "logits_rest": [0.0, -1.0]}
    out = with_dense_logits(rows, 5)
    assert set(out) == {"input_ids", "logits"} and out["logits"].shape == (2, 5)
    assert out["logits"].argmax(-1).tolist() == [2, 1]
    np.testing.assert_allclose(out["logits"][0], [1.0, np.log(1 / 3), 4.0, np.log(1 / 3),
                                                  np.log(1 / 3)], rtol=1e-6)
    assert with_dense_logits({"logits": [[1.0, 2.0]]}, 2) == {"logits": [[1.0, 2.0]]}


def test_the_teacher_pool_is_fixed_or_autoscales_between_its_bounds():
    from xdistil_ray.teacher.step import actor_pool

    fixed = actor_pool(3)
    assert (fixed.min_size, fixed.max_size) == (3, 3)
    growing = actor_pool(2, 8)
    assert (growing.min_size, growing.max_size) == (2, 8)
    assert (actor_pool(4, 4).min_size, actor_pool(4, 4).max_size) == (4, 4)


def _write_part(run, shard, ids):
    import posixpath

    import pyarrow as pa
    import pyarrow.parquet as pq

    from xdistil_ray.teacher.shards import SHARDS, part_name

    table = pa.table({"id": pa.array(ids, pa.int64()),
                      "logits": [[float(i), -float(i)] for i in ids]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    name = part_name(ids)
    run.write_bytes(posixpath.join(SHARDS, shard, name), sink.getvalue().to_pybytes())
    return name


def test_a_retried_write_replaces_its_part_and_counts_once(tmp_path):
    """Parts are named by their rows: Ray retrying a write task that had written its part
    writes the same file again, and the ledger (which commits a shard the moment its rows are
    all there) counts those rows once. With random names the shard held 1.5x its rows and the
    step failed at its end."""
    from xdistil_ray.run.runfolder import RunFolder
    from xdistil_ray.run.markers import ShardMarker
    from xdistil_ray.teacher.shards import SHARDS, ShardLedger, part_name

    run = RunFolder(str(tmp_path))
    ledger = ShardLedger(run, {"shard-0": 6}, every_s=0)
    assert part_name([5, -3, 9]) == part_name([9, 5, -3]) != part_name([5, -3])
    first = _write_part(run, "shard-0", [1, 2, 3])
    ledger.add("shard-0", first, 3)
    ledger.add("shard-0", _write_part(run, "shard-0", [1, 2, 3]), 3)  # the retry
    assert ledger.committed_shards() == []
    ledger.add("shard-0", _write_part(run, "shard-0", [-4, 5, 6]), 3)
    assert ledger.committed_shards() == ["shard-0"]
    assert run.marker(f"{SHARDS}/shard-0", ShardMarker).rows == 6
    assert len(run.marker(f"{SHARDS}/shard-0").files) == 2


def test_parts_that_repeat_rows_are_merged_before_the_commit(tmp_path, capsys):
    """A retry whose blocks were cut differently leaves overlapping parts: the commit keeps each
    row once (one merged part) instead of refusing the shard."""
    import pyarrow.parquet as pq

    from xdistil_ray.run.runfolder import RunFolder
    from xdistil_ray.teacher.shards import SHARDS, commit_shard

    run = RunFolder(str(tmp_path))
    _write_part(run, "s", [1, 2, 3, 4])
    _write_part(run, "s", [3, 4, 5])
    assert not commit_shard(run, "s", 6)  # row 6 is missing: not whole
    _write_part(run, "s", [6])
    assert commit_shard(run, "s", 6)
    assert "2 rows written twice" in capsys.readouterr().out
    [path] = run.committed_files(f"{SHARDS}/s")
    table = pq.read_table(path)
    assert sorted(table.column("id").to_pylist()) == [1, 2, 3, 4, 5, 6]
    assert [r[0] for r in table.column("logits").to_pylist()] == [
        float(i) for i in table.column("id").to_pylist()]


def test_a_committed_shard_with_a_cut_part_runs_again(tmp_path, capsys):
    from xdistil_ray.run.runfolder import RunFolder
    from xdistil_ray.teacher.shards import SHARDS, commit_shard, committed_shards

    run = RunFolder(str(tmp_path))
    for shard, ids in (("a", [1, 2]), ("b", [3, 4])):
        name = _write_part(run, shard, ids)
        assert commit_shard(run, shard, 2)
    assert committed_shards(run, ["a", "b", "c"]) == ["a", "b"]
    run.write_bytes(f"{SHARDS}/b/{name}", b"PAR1")  # truncated
    assert committed_shards(run, ["a", "b", "c"]) == ["a"]
    assert f"shard b: {name} missing or of another size" in capsys.readouterr().out
