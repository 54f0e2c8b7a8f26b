"""Label Studio, batch-aware: its ML-backend protocol served over a batchal labelling project.

Label Studio's community edition orders tasks by one number per task, the prediction score.
That cannot say "these ten together", so the backend writes the batch into the scores: the
current batch's unlabelled items (the BatchBALD/BADGE/... picks of a ``batchal label`` project,
audit items included, in batch order) score in (1, 2], highest first, and every other item
scores the latest model's uncertainty, ``1 - max probability``, in [0, 1). Sorting the Data
Manager by prediction score, descending, therefore lists the batch first, in batchal's order.

The protocol (what Label Studio 1.x sends, as in ``label_studio/ml/api_connector.py``):

- ``GET /health`` -> ``{"status": "UP", "model_class": "batchal", ...}``
- ``POST /setup`` ``{"project": "ID.TIMESTAMP", "schema": LABEL_CONFIG, ...}`` -> ``{"model_version"}``.
  The config must hold one ``<Choices>`` whose values are the project's classes (400 saying
  which are missing or extra otherwise). The version names the current batch
  (``batchal-STRATEGY-batch-N``): a new batch is a new version, and Label Studio then asks for
  predictions again.
- ``POST /predict`` ``{"tasks": [...], ...}`` -> ``{"results": [{"result", "score", "model_version"}, ...]}``,
  one per task in order. ``result`` is the model's suggestion as a ``choices`` region (empty
  before a model exists). A task names its item by ``data.batchal_id``, the image's path
  relative to the project's images folder (``batchal label-studio tasks`` writes them).
- ``POST /webhook``: ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED`` record the annotation's
  choice as a label of the item under annotator ``label-studio:USER``; a skipped (cancelled)
  annotation flags the item ``unsure``; ``ANNOTATIONS_DELETED`` withdraws the labels those
  annotations gave; ``START_TRAINING`` retrains. When every item of the current batch is
  labelled or flagged, the backend retrains and selects the next batch in the background.
- ``POST /train`` (older Label Studio's "Start training"): retrain and select now.

Keeping the ranking current. Label Studio averages, for the Data Manager's score column, only
the predictions whose model version is the project's, and asks the backend again only for tasks
without a prediction of the backend's current version. Given Label Studio's address and an API
key (``--label-studio-url``, ``--api-key`` or ``$LABEL_STUDIO_URL``, ``$LABEL_STUDIO_API_KEY``, as
Label Studio's own ML backends take them), the backend therefore, after connecting and after
every new batch, runs the Data Manager's "Retrieve predictions" action on all tasks and then sets
the project's model version to the new one: the sorted list then starts with the new batch with
no step by hand. Without them, do those two steps in Label Studio after each batch.

Label Studio must be allowed to call a backend on a local address (``ML_BLOCK_LOCAL_IP=false``,
and ``SSRF_PROTECTION_ENABLED=false`` for the webhook); the README gives the steps.

The package, by concern: ``config`` (label config, import tasks), ``client`` (Label Studio's REST
API), ``backend`` (the protocol over a project), ``app`` (its routes); the commands live with the
others in ``batchal.cli.label_studio``.
"""

from batchal.integrations.label_studio.app import create_app
from batchal.integrations.label_studio.backend import ANNOTATOR_PREFIX, Backend
from batchal.integrations.label_studio.client import LabelStudioClient
from batchal.integrations.label_studio.config import DEFAULT_IMAGE_URL, ProtocolError, choices_of, label_config, tasks_for

__all__ = ["ANNOTATOR_PREFIX", "Backend", "DEFAULT_IMAGE_URL", "LabelStudioClient", "ProtocolError", "choices_of", "create_app",
           "label_config", "tasks_for"]
