"""File names of the run directory and of an export folder: the one place they are spelled.

Training writes these files, `transferkit.run.Run` reads the run directory, the exporter
writes the export folder and `transferkit.predictor` reads it. Nobody else names a file.

    RUN_DIR/
      run.json             {"state": "running" | "complete"}: written first and last
      config.json          every option, defaults filled in
      labels.json          class names, in output order
      plan.json            freeze or fine-tune, and why
      audit.csv            every file seen: path, class, status, reason
      splits.csv           path, class, split (train / val / test)
      history.csv          both training phases, one row per epoch
      metrics.json         test accuracy, macro-F1; val_accuracy, val_macro_f1 (what
                           choices rank on); counts, timings
      per_class.csv, confusion_matrix.csv, confusion_matrix.png, top_losses.csv
                           (written before calibration: uncalibrated probabilities)
      explain_check.csv    faithfulness of the explanation methods (`explain-check`)
      trust.json           temperature, "not sure" and "unknown" thresholds, how chosen
      trust.npz            the unknown score's fitted arrays, the uncalibrated head
      calibration.csv, calibration.png    reliability bins before / after (test split)
      risk_coverage.csv, risk_coverage.png  precision vs coverage by threshold (test)
      model.keras          the trained classifier (raw 0-255 RGB in, probabilities out)
      features/            the feature store (`transferkit.features`)
      checkpoints/         training's resumable state; removed when the run completes
      logs/                TensorBoard event files of every phase (tensorboard --logdir)
      export/              the default export folder
      data_issues.csv      the data doctor: path, class, issue, score, group, suggested_class
      doctor.json          the doctor's thresholds, counts and timings
      test_predictions.csv every test image: path, true, predicted, probability
                           (uncalibrated, as top_losses.csv)
      report.html          the run report (`transferkit report`), one self-contained page
      MODEL_CARD.md        the model card (Hugging Face format), written with the report
      feedback/<class>/, feedback/feedback.csv  images the demo's visitors corrected
                           (`transferkit.demo.feedback`): file, class, predicted, probability, time
      inspect/embedding_tsne.png, embedding_grid.png  the embedding map and grid
                           (`transferkit inspect embedding`), if made
      ensemble.json        an ensemble's members: prefix, run directory, backbone, seed,
                           test metrics (`transferkit.ensemble`); model.keras averages them
      members/m1 ... mK/   an ensemble's member runs, each a complete run directory
      student/             `--distill`: the ensemble's student, a complete run directory
      teacher_probabilities.csv  a distilled run: path, the teacher's probability of each
                           class, for every training image (`transferkit.distill`)

    COMPARE/               `transferkit compare --out COMPARE`
      <backbone>/          a run directory per backbone
      leaderboard.csv, winner.json

    EXPORT/
      saved_model/         TensorFlow SavedModel (assets/labels.txt, assets/config.json)
      model.tflite, model_int8.tflite, model.onnx, model.keras, labels.txt,
      config.json, parity.json, MODEL_CARD.md
"""

# The run directory.
STATE_FILE = "run.json"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"
PLAN_FILE = "plan.json"
AUDIT_FILE = "audit.csv"
SPLITS_FILE = "splits.csv"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.csv"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
TOP_LOSSES_FILE = "top_losses.csv"
EXPLAIN_CHECK_FILE = "explain_check.csv"
TRUST_FILE = "trust.json"     # transferkit.trust.params
TRUST_ARRAYS = "trust.npz"
CALIBRATION_CSV = "calibration.csv"
CALIBRATION_PNG = "calibration.png"
RISK_COVERAGE_CSV = "risk_coverage.csv"
RISK_COVERAGE_PNG = "risk_coverage.png"
MODEL_FILE = "model.keras"
FEATURES_DIR = "features"
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"             # TensorBoard: logs/phase1, logs/phase2[_stageN]
EXPORT_DIR = "export"
INSPECT_DIR = "inspect"       # `transferkit inspect` pictures (default --out)
DATA_ISSUES_FILE = "data_issues.csv"
DOCTOR_FILE = "doctor.json"
TEST_PREDICTIONS_FILE = "test_predictions.csv"
REPORT_FILE = "report.html"
FEEDBACK_DIR = "feedback"     # the demo's corrections: feedback/<class>/*, feedback.csv
FEEDBACK_CSV = "feedback.csv"
MODEL_CARD_FILE = "MODEL_CARD.md"  # transferkit.report.model_card; in exports too
ENSEMBLE_FILE = "ensemble.json"
MEMBERS_DIR = "members"
STUDENT_DIR = "student"
TEACHER_FILE = "teacher_probabilities.csv"
LEADERBOARD_FILE = "leaderboard.csv"  # `transferkit compare`'s folder
WINNER_FILE = "winner.json"
EMBEDDING_PNGS = ("embedding_tsne.png", "embedding_grid.png")  # in INSPECT_DIR

# An export folder (CONFIG_FILE and MODEL_FILE as in the run directory).
SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_PB = "saved_model.pb"
TFLITE_FILE = "model.tflite"
TFLITE_INT8_FILE = "model_int8.tflite"   # full-integer ("tflite-int8" format)
ONNX_FILE = "model.onnx"
LABELS_TXT = "labels.txt"
PARITY_FILE = "parity.json"
