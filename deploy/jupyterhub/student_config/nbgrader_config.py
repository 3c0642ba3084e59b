# nbgrader in a student's server on the class hub: the hub sets JUPYTER_CONFIG_PATH to this folder and
# the two variables below (deploy/jupyterhub/jupyterhub_config.py), so the Assignments tab fetches
# from and submits to the course's exchange.
import os

c = get_config()  # noqa: F821 (nbgrader provides get_config)

c.CourseDirectory.course_id = os.environ.get("P3DLAB_COURSE_ID", "p3dlab")
c.Exchange.root = os.environ.get("P3DLAB_EXCHANGE", "/srv/nbgrader/exchange")
