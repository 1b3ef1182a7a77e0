"""The bad-input matrix: what a user can get wrong, and what smilfit answers.

Each file holds one table (a parametrized test or a test per row) with the message asserted:

- ``test_checkpoints_and_models.py``: checkpoints that are missing, a directory, empty,
  garbage, truncated, carry a pickled payload or are not a dict; checkpoints whose stored
  config is Python text with a payload (``tools/test.py``, ``tools/infer.py``: nothing runs);
  configs that cannot be stored as data; stored configs importing foreign plugins; model
  files (``.pkl``, ``.json``, ``.json.gz``) truncated, garbage, a directory or with a payload
  (also through ``tools/fit.py``, ``convert_model``, ``make_synthetic``, ``build_model``);
  bad ``--resume``/``load_from`` and URL checkpoints for ``tools/train.py``; training data
  with another keypoint count than the body model (also through ``tools/train.py``).
- ``test_datasets.py``: prepared datasets whose fields disagree (cameras for fewer views,
  another keypoint count, fewer rows, session indices and tables) and non-finite cameras
  (reported by sample and camera); joint lookups naming points that do not exist on either
  side; stale prepared data (another session, a changed session file, other ingestion or
  synthetic options, a missing input, no record); writes killed with ``kill -9`` at
  arbitrary points or interrupted inside a batch, then resumed (compared with an
  uninterrupted run); ``tools/preprocess_sleap.py`` under SIGTERM (message, exit status,
  ``--resume``) and ``kill -9`` then ``--resume``.
- ``test_fitting.py``: typos in ``data`` keys, handler keywords and joint lookups; stale
  prepared data (changed options, missing or changed SLEAP input); ``--resume`` with another
  config or dataset; a rerun after a failed start; NaN cameras; every sample failing; the
  quality table naming a miscalibrated camera; the log file and no FutureWarning.

Elsewhere: checkpoint writes killed mid-way (``tests/engine/test_checkpoint_atomic.py``),
file permissions (``tests/utils/test_atomic.py``), a ``--dataset`` with other keypoints for
the visuals (``tests/visualization/test_fit_visuals.py``), which errors the tools print as
one line (``tests/tools/test_cli_errors.py``).
"""
