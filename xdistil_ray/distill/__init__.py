"""Steps `stages/<k>-<name>` (and `teacher_finetune`): losses, objective, schedule, the worker
loop, checkpoints, validation."""
