# nbgrader configuration of the p3dlab course. Run nbgrader from this folder (docs/teaching.md).
import os

c = get_config()  # noqa: F821 (nbgrader provides get_config)

c.CourseDirectory.course_id = os.environ.get("P3DLAB_COURSE_ID", "p3dlab")
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))

# The same stubs as `python -m p3dlab.classroom release`, so lessons/ equals nbgrader's release.
c.ClearSolutions.code_stub = {"python": 'raise NotImplementedError("write your solution here")'}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A lesson at full size runs in under 3 minutes; autograding in fast mode (P3DLAB_FAST=1) in under 1.
c.Execute.timeout = 600
c.Execute.allow_errors = True

# What lessons save beside a notebook (videos: p3dlab.video.lesson_output) is not part of an assignment.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "outputs"]
