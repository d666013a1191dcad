"""What the driver does when a Ray Train run fails (distill.step.fit_with_retries): a worker
failure is retried from the newest checkpoint up to train.max_failures times, one a restart
would meet again stops the run at once with its message, a storage outage is waited out."""

import pytest
from ray.train.v2._internal.exceptions import UserExceptionWithTraceback
from ray.train.v2.api.exceptions import WorkerGroupError

from xdistil_ray.errors import ConfigError
from xdistil_ray.errors import WillFailAgain
from xdistil_ray.errors import will_fail_again
from xdistil_ray.errors import will_fail_again_message
from xdistil_ray.distill import step as train

STORAGE_ERROR = "AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 7"


def _worker_error(error: BaseException) -> WorkerGroupError:
    """What Ray Train 2.60 hands the driver: each rank's error wrapped with its traceback."""
    wrapped = UserExceptionWithTraceback(error, traceback_str=(
        "Traceback (most recent call last):\n  File \"train_loop.py\", line 1\n"
        f"{type(error).__module__}.{type(error).__name__}: {error}"))
    return WorkerGroupError(f"[Rank 0]\n{wrapped}", {0: wrapped})


class Fits:
    """A ``fit`` that raises the given errors in turn, then returns 'done'."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_an_error_a_restart_would_meet_again_stops_the_run_at_once(capsys):
    cause = RuntimeError("Error(s) in loading state_dict for BertModel: size mismatch")
    fit = Fits(_worker_error(will_fail_again("building the model of logits", cause)))
    with pytest.raises(ConfigError) as e:
        train.fit_with_retries(fit, run=None, rel="stages", retries=2)
    assert fit.calls == 1  # not retried
    assert str(e.value) == ("stages: building the model of logits: RuntimeError: Error(s) in "
                            "loading state_dict for BertModel: size mismatch (not retried: a "
                            "restart would fail the same way)")
    assert "a training worker failed" not in capsys.readouterr().out


def test_other_worker_failures_are_retried_up_to_max_failures(capsys):
    lost = _worker_error(RuntimeError("The actor died unexpectedly before finishing this task"))
    fit = Fits(lost, lost)
    assert train.fit_with_retries(fit, run=None, rel="stages", retries=2) == "done"
    out = capsys.readouterr().out
    assert fit.calls == 3 and out.count("a training worker failed") == 2
    assert "restarting from the newest checkpoint (failure 2 of at most 2)" in out
    fit = Fits(lost, lost, lost)
    with pytest.raises(WorkerGroupError):
        train.fit_with_retries(fit, run=None, rel="stages", retries=2)
    assert fit.calls == 3
    with pytest.raises(WorkerGroupError):  # max_failures 0: the first failure ends the run
        train.fit_with_retries(Fits(lost), run=None, rel="stages", retries=0)


def test_storage_outages_are_waited_out_and_counted_apart(monkeypatch, capsys):
    from types import SimpleNamespace

    from xdistil_ray.run import storage

    waits = []
    monkeypatch.setattr(storage, "wait_until_reachable",
                        lambda uri, options, wait_s: waits.append(uri) or 3.0)
    run = SimpleNamespace(uri="s3://runs/x", options=None)
    down = _worker_error(OSError(STORAGE_ERROR))
    lost = _worker_error(RuntimeError("The actor died unexpectedly"))
    fit = Fits(down, lost, down)  # two outages and one failure: within 2 of each
    assert train.fit_with_retries(fit, run=run, rel="stages", retries=2) == "done"
    assert fit.calls == 4 and waits == ["s3://runs/x", "s3://runs/x"]
    assert "storage answers again after 3 s: resuming" in capsys.readouterr().out


def test_the_message_is_found_whatever_wraps_it():
    error = will_fail_again("building the model of teacher_finetune", ValueError("bad config"))
    assert isinstance(error, WillFailAgain) and isinstance(error, ConfigError)
    assert will_fail_again_message(_worker_error(error)) == (
        "building the model of teacher_finetune: ValueError: bad config")
    # only the traceback's text (an exception that did not unpickle as itself)
    text_only = UserExceptionWithTraceback(RuntimeError("x"), traceback_str=(
        f"xdistil_ray.errors.WillFailAgain: {error}"))
    assert will_fail_again_message(WorkerGroupError("", {1: text_only})) == (
        "building the model of teacher_finetune: ValueError: bad config")
    assert will_fail_again_message(_worker_error(RuntimeError("gloo: connection reset"))) is None
    assert will_fail_again_message(RuntimeError("no worker failures")) is None


@pytest.mark.integration
def test_a_teacher_whose_weights_cannot_load_stops_at_its_first_attempt(
        tmp_path, ray_local, teacher_path, capsys):
    """A teacher folder whose weights file is damaged (config and tokenizer fine: every check
    before the fine-tune passes): the fine-tune's worker cannot build the model, and the run
    stops with that error after one attempt, not after train.max_failures restarts (each a
    new worker group that would fail the same way: about 10 s apiece here)."""
    from test_tasks_integration import _run
    from transformers import BertConfig, BertModel

    from xdistil_ray.modeling.models import load_tokenizer

    teacher = tmp_path / "teacher"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(teacher)
    load_tokenizer(teacher_path).save_pretrained(teacher)
    (teacher / "model.safetensors").write_bytes(b"\x00" * 64)  # a truncated download
    with pytest.raises(ConfigError, match=r"^teacher_finetune: building the model of "
                                          r"teacher_finetune: .*\(not retried: a restart would "
                                          r"fail the same way\)$"):
        _run(tmp_path, "sentence", [{"name": "logits", "losses": [{"type": "logits"}]}],
             [f"teacher.model={teacher}", "teacher.finetune.epochs=1", "train.max_failures=2"],
             num_corpus=64, num_train=64, num_dev=16)
    out = capsys.readouterr().out
    assert "teacher_finetune: running" in out and "a training worker failed" not in out
