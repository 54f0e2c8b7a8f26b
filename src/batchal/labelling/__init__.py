"""Human in the loop: a labelling project (SQLite), the web app and its JSON API, export."""

from batchal.labelling.export import export_labels, export_predictions
from batchal.labelling.project import Project, init_project

__all__ = ["Project", "export_labels", "export_predictions", "init_project"]
