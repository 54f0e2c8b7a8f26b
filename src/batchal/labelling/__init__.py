"""Human in the loop: a labelling project (SQLite), the web app and its JSON API, export."""

from batchal.labelling.export import export_labels
from batchal.labelling.project import Project, init_project

__all__ = ["Project", "export_labels", "init_project"]
