"""Teacher families: where each encoder architecture keeps the parts that distillation touches.

Distillation needs, from any encoder: its word embeddings (and the projection to the hidden
width where the embeddings are narrower, as in ELECTRA and some DeBERTa models), every block's
query / key / value / output projections, feed-forward layers and norms, and the few pieces
outside the blocks (position tables, DeBERTa's relative-position table, a final norm, a pooler).
Each family below names them for its Hugging Face modules, so that the student initialization
(:mod:`xdistil_ray.modeling.models`), the attention-relation loss and the input handling are written once.

Families: BERT (mBERT, MiniLM), RoBERTa, XLM-R, ELECTRA, DeBERTa-v2/v3, DistilBERT, ModernBERT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


class UnsupportedFamily(ValueError):
    """A model of an architecture no family describes."""


@dataclass
class Block:
    """One transformer block's parts. Projections map the hidden width to itself (Q/K/V:
    hidden -> heads x head size); ``qkv`` is a fused [Q; K; V] projection (ModernBERT) in place
    of ``query``/``key``/``value``; ``ffn_in`` holds [input; gate] rows when ``glu``."""

    attn_out: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    query: nn.Linear | None = None
    key: nn.Linear | None = None
    value: nn.Linear | None = None
    qkv: nn.Linear | None = None
    attn_norm: nn.Module | None = None
    ffn_norm: nn.Module | None = None
    glu: bool = False
    head_projections: list = field(default_factory=list)
    """Further hidden -> heads projections, initialized like the keys (DeBERTa's position
    key/query projections)."""

    def qkv_modules(self) -> list[nn.Linear]:
        """The modules whose outputs hold the queries, keys and values."""
        return [self.qkv] if self.qkv is not None else [self.query, self.key, self.value]


@dataclass
class Anatomy:
    """A model's parts, seen from its base (encoder) model."""

    word_embeddings: nn.Embedding
    blocks: list[Block]
    embedding_tables: list[nn.Embedding] = field(default_factory=list)
    """Other tables added to the word embeddings before their norm (positions, token types)."""
    embedding_norm: nn.Module | None = None
    embedding_projection: nn.Linear | None = None
    """Embedding width -> hidden width, where the embeddings are narrower (ELECTRA, DeBERTa)."""
    hidden_tables: list[nn.Embedding] = field(default_factory=list)
    """Tables in the hidden width outside the blocks (DeBERTa's relative positions)."""
    hidden_norms: list[nn.Module] = field(default_factory=list)
    """Norms in the hidden width outside the blocks (DeBERTa's relative-position norm,
    ModernBERT's final norm)."""
    hidden_linears: list[nn.Linear] = field(default_factory=list)
    """Hidden -> hidden layers outside the blocks (a pooler)."""


@dataclass(frozen=True)
class Family:
    """One architecture family."""

    name: str
    model_types: tuple[str, ...]
    qkv_names: tuple[str, ...]
    """Parameter-name parts of the query/key/value projections (for what a loss reaches)."""
    token_types: bool = True
    """Whether its models take ``token_type_ids``."""
    embedding_size_attr: str | None = None
    """The config field of an embedding width that may differ from the hidden width."""
    intermediate_attr: str = "intermediate_size"

    def anatomy(self, model: nn.Module) -> Anatomy:
        return _ANATOMIES[self.name](model.base_model)

    def student_config(self, teacher_config, *, num_layers: int, hidden_size: int,
                       num_heads: int, intermediate_size: int, layer_map: list[int]):
        """The teacher's config with the student's shape (the teacher's own architecture);
        per-block settings (``layer_types``: ModernBERT's local or global attention) those of
        the teacher blocks in ``layer_map`` (0-based, one per student block).

        An embedding narrower than the teacher's hidden width (ELECTRA, DeBERTa) stays as it is
        when the student is wider, and the student keeps the projection; otherwise the
        student's embeddings take its hidden width (and it has no projection)."""
        config = teacher_config.__class__.from_dict(teacher_config.to_dict())
        config.num_hidden_layers = num_layers
        config.hidden_size = hidden_size
        config.num_attention_heads = num_heads
        setattr(config, self.intermediate_attr, intermediate_size)
        if getattr(teacher_config, self.embedding_size_attr or "", None):
            width = embedding_width(teacher_config, self)
            factorized = width != teacher_config.hidden_size
            setattr(config, self.embedding_size_attr,
                    width if factorized and width < hidden_size else hidden_size)
        if getattr(teacher_config, "pooler_hidden_size", None):  # DeBERTa's head
            config.pooler_hidden_size = hidden_size
        types = getattr(teacher_config, "layer_types", None)
        if types:
            config.layer_types = [types[i] for i in layer_map]
        config.architectures = None  # save_pretrained records the student's own class
        return config


def embedding_width(config, family: Family) -> int:
    """The word embeddings' width (the hidden width unless the family factorizes them)."""
    if family.embedding_size_attr:
        width = getattr(config, family.embedding_size_attr, None)
        if width:
            return width
    return config.hidden_size


def _bert_like(base) -> Anatomy:
    """BERT, RoBERTa, XLM-R, ELECTRA: post-norm blocks under ``encoder.layer``."""
    emb = base.embeddings
    tables = [t for t in (getattr(emb, "position_embeddings", None),
                          getattr(emb, "token_type_embeddings", None)) if t is not None]
    pooler = getattr(base, "pooler", None)
    blocks = [Block(query=b.attention.self.query, key=b.attention.self.key,
                    value=b.attention.self.value, attn_out=b.attention.output.dense,
                    attn_norm=b.attention.output.LayerNorm, ffn_in=b.intermediate.dense,
                    ffn_out=b.output.dense, ffn_norm=b.output.LayerNorm)
              for b in base.encoder.layer]
    return Anatomy(word_embeddings=emb.word_embeddings, blocks=blocks, embedding_tables=tables,
                   embedding_norm=emb.LayerNorm,
                   embedding_projection=getattr(base, "embeddings_project", None),
                   hidden_linears=[pooler.dense] if pooler is not None else [])


def _deberta(base) -> Anatomy:
    """DeBERTa-v2/v3: post-norm blocks, disentangled attention over a shared relative-position
    table (with its own norm), optional absolute positions, token types and embedding width."""
    emb, enc = base.embeddings, base.encoder
    tables = [t for t in (getattr(emb, "position_embeddings", None),
                          getattr(emb, "token_type_embeddings", None)) if t is not None]
    blocks = []
    for b in enc.layer:
        att = b.attention.self
        blocks.append(Block(
            query=att.query_proj, key=att.key_proj, value=att.value_proj,
            attn_out=b.attention.output.dense, attn_norm=b.attention.output.LayerNorm,
            ffn_in=b.intermediate.dense, ffn_out=b.output.dense, ffn_norm=b.output.LayerNorm,
            head_projections=[p for p in (getattr(att, "pos_key_proj", None),
                                          getattr(att, "pos_query_proj", None))
                              if p is not None]))
    rel = getattr(enc, "rel_embeddings", None)
    norm = getattr(enc, "LayerNorm", None)
    return Anatomy(word_embeddings=emb.word_embeddings, blocks=blocks, embedding_tables=tables,
                   embedding_norm=emb.LayerNorm,
                   embedding_projection=getattr(emb, "embed_proj", None),
                   hidden_tables=[rel] if rel is not None else [],
                   hidden_norms=[norm] if norm is not None else [])


def _distilbert(base) -> Anatomy:
    emb = base.embeddings
    blocks = [Block(query=b.attention.q_lin, key=b.attention.k_lin, value=b.attention.v_lin,
                    attn_out=b.attention.out_lin, attn_norm=b.sa_layer_norm,
                    ffn_in=b.ffn.lin1, ffn_out=b.ffn.lin2, ffn_norm=b.output_layer_norm)
              for b in base.transformer.layer]
    return Anatomy(word_embeddings=emb.word_embeddings, blocks=blocks,
                   embedding_tables=[emb.position_embeddings], embedding_norm=emb.LayerNorm)


def _modernbert(base) -> Anatomy:
    """ModernBERT: pre-norm blocks (the first one without an attention norm), a fused Q/K/V
    projection, a gated feed-forward layer, rotary positions (no table), a final norm."""
    blocks = [Block(qkv=b.attn.Wqkv, attn_out=b.attn.Wo,
                    attn_norm=b.attn_norm if isinstance(b.attn_norm, nn.LayerNorm) else None,
                    ffn_in=b.mlp.Wi, ffn_out=b.mlp.Wo, ffn_norm=b.mlp_norm, glu=True)
              for b in base.layers]
    return Anatomy(word_embeddings=base.embeddings.tok_embeddings, blocks=blocks,
                   embedding_norm=base.embeddings.norm, hidden_norms=[base.final_norm])


_ANATOMIES = {"bert": _bert_like, "deberta": _deberta, "distilbert": _distilbert,
              "modernbert": _modernbert}

FAMILIES = (
    Family("bert", ("bert", "roberta", "xlm-roberta", "camembert", "electra"),
           qkv_names=(".query.", ".key.", ".value."), embedding_size_attr="embedding_size"),
    Family("deberta", ("deberta-v2",), qkv_names=(".query_proj.", ".key_proj.", ".value_proj."),
           embedding_size_attr="embedding_size"),
    Family("distilbert", ("distilbert",), qkv_names=(".q_lin.", ".k_lin.", ".v_lin."),
           token_types=False, intermediate_attr="hidden_dim"),
    Family("modernbert", ("modernbert",), qkv_names=(".Wqkv.",), token_types=False),
)
"""Among the BERT-like types only ELECTRA's config has an ``embedding_size``."""

SUPPORTED = tuple(t for f in FAMILIES for t in f.model_types)


def family_of(config) -> Family:
    """The family of a Hugging Face config (or model).

    Raises:
        UnsupportedFamily: naming the model type and the supported ones.
    """
    config = getattr(config, "config", config)
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise UnsupportedFamily(
        f"model type {model_type!r} is not supported; supported: {', '.join(SUPPORTED)}")


def shape_of(config) -> dict:
    """A config's shape under the standard names (DistilBERT calls its feed-forward width
    ``hidden_dim``)."""
    family = family_of(config)
    return {"num_hidden_layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
            "num_attention_heads": config.num_attention_heads,
            "intermediate_size": getattr(config, family.intermediate_attr)}


def fresh_config(model_type: str, teacher_config, *, num_layers: int, hidden_size: int,
                 num_heads: int, intermediate_size: int):
    """A config of another family than the teacher's (``student.architecture``, for a student
    that is not initialized from the teacher), at the student's shape, on the teacher's
    vocabulary: its size, padding id, position range and token types.

    Raises:
        UnsupportedFamily: a model type no family describes.
    """
    from transformers import AutoConfig

    if model_type not in SUPPORTED:
        raise UnsupportedFamily(f"model type {model_type!r} is not supported; supported: "
                                f"{', '.join(SUPPORTED)}")
    family = next(f for f in FAMILIES if model_type in f.model_types)
    positions = getattr(teacher_config, "max_position_embeddings", 512)
    kwargs = {"vocab_size": teacher_config.vocab_size, "hidden_size": hidden_size,
              "num_hidden_layers": num_layers, "num_attention_heads": num_heads,
              family.intermediate_attr: intermediate_size,
              "pad_token_id": teacher_config.pad_token_id or 0,
              # RoBERTa-style positions start after the padding id
              "max_position_embeddings": positions + (teacher_config.pad_token_id or 0) + 1}
    if family.token_types and getattr(teacher_config, "type_vocab_size", 0):
        kwargs["type_vocab_size"] = teacher_config.type_vocab_size
    if family.embedding_size_attr:
        kwargs[family.embedding_size_attr] = hidden_size
    for name in ("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"):
        value = getattr(teacher_config, name, None)
        kwargs[name] = value if value is not None and value < teacher_config.vocab_size else \
            kwargs["pad_token_id"]
    return AutoConfig.for_model(model_type, **kwargs)


def qkv_outputs(block: Block, outputs: list) -> tuple:
    """(Q, K, V) from the captured outputs of :meth:`Block.qkv_modules` (split if fused)."""
    if block.qkv is not None:
        return tuple(outputs[0].chunk(3, dim=-1))
    return tuple(outputs)
