"""Which teacher block each student block learns from (and starts from): pure arithmetic on
block counts, shared by the student's init from the teacher and the stages' layer maps."""


def uniform_layers(num_teacher: int, num_student: int) -> list[int]:
    """Teacher block (1-based) for each student block: uniformly spaced, ending at the top."""
    if num_student >= num_teacher:
        return [min(i, num_teacher) for i in range(1, num_student + 1)]
    step = num_teacher / num_student
    return [int(round(step * (i + 1))) for i in range(num_student)]
