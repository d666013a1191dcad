"""The jobs: the distillation pipeline, its dry run, the fine-tuning job, their command line."""
