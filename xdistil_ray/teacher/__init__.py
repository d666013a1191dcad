"""Step `teacher`: the teacher's outputs per shard, committed as they finish."""
