"""Step `student_init`: the student's starting weights."""
