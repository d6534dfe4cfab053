"""Export: the submission module (raw images in, 64-D out), scripting, verification, submission.zip."""
from guie.export.run import export_ensemble, export_run

__all__ = ["export_ensemble", "export_run"]
