import numpy as np
import torch

from xdistil_ray.models import load_classifier
from xdistil_ray.steps.teacher_inference import TeacherInference, _to_arrow


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
