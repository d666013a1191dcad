"""Answering questions with an exported QA student (or any extractive-QA Hugging Face folder).

transformers 5 removed its ``question-answering`` pipeline; this is the same job, decoded as
the run's evaluation decodes (:mod:`xdistil_ray.tasks.qa`): the context split into windows, the best
span over them, and "no answer" when the model prefers it by more than ``threshold`` (SQuAD
2.0; the report's ``threshold``, chosen on dev, is the one its scores used)::

    from xdistil_ray.export.answer import Answerer

    answer = Answerer("runs/qa/student")
    answer(question="How is the battery of the phone?",
           context="The screen is awful. The battery of the phone is really great.")
    # {"answer": "great", "start": ..., "end": ..., "score": ..., "no_answer": False}
"""

from __future__ import annotations

import math

import torch

from xdistil_ray.tasks import qa


class Answerer:
    """A QA model folder and its tokenizer, ready to answer.

    Args:
        folder: a Hugging Face folder with a ``...ForQuestionAnswering`` model and tokenizer.
        threshold: no answer when the no-answer score beats the best span's by more than this.
        windows: how contexts are split and spans chosen (defaults: 384 tokens, stride 128,
            answers of at most 30 tokens).
    """

    def __init__(self, folder: str, *, threshold: float = 0.0,
                 windows: qa.WindowSettings | None = None, device: str = "cpu"):
        from xdistil_ray.modeling.models import auto_class, load_tokenizer

        self.tokenizer = load_tokenizer(folder)
        self.model = auto_class("qa").from_pretrained(folder).to(device).eval()
        self.threshold = threshold
        self.windows = windows or qa.WindowSettings()
        self.device = device

    @torch.inference_mode()
    def __call__(self, *, question: str, context: str) -> dict:
        from xdistil_ray.modeling.batches import pad_batch
        from xdistil_ray.modeling.models import model_inputs, task_logits

        question = question.lstrip()
        problem = qa.window_problem(self.tokenizer, question, context, self.windows)
        if problem == qa.QUESTION_TOO_LONG:
            raise ValueError(f"the question takes more than qa.max_length "
                             f"({self.windows.max_length}) - doc_stride tokens")
        if problem:
            raise ValueError(f"the context takes more than qa.max_windows "
                             f"({self.windows.max_windows}) windows")
        w = qa.encode_windows(self.tokenizer, [question], [context], None, self.windows)
        rows = {"input_ids": w["input_ids"]}
        if "token_type_ids" in w:
            rows["token_type_ids"] = w["token_type_ids"]
        batch = {k: v.to(self.device)
                 for k, v in pad_batch(rows, self.model.config.pad_token_id or 0, None).items()}
        logits = task_logits(self.model(**model_inputs(self.model, batch))).float().cpu()
        windows = [{"start_logits": logits[i, :len(ids), 0].numpy(),
                    "end_logits": logits[i, :len(ids), 1].numpy(),
                    "cls": qa.cls_index(self.tokenizer, ids),
                    "offset_start": w["offset_start"][i], "offset_end": w["offset_end"][i]}
                   for i, ids in enumerate(w["input_ids"])]
        best = qa.best_answer(windows, context, self.windows)
        no_answer = best.score == -math.inf or best.null_margin > self.threshold
        return {"answer": "" if no_answer else best.text,
                "start": -1 if no_answer else best.start, "end": -1 if no_answer else best.end,
                "score": best.score, "no_answer": no_answer}
