"""Kaggle packaging: the dataset and notebook folders (guie-package), the upload through the
official kaggle client, and the local emulation of the host (guie-smoke).

Modules: kaggle_ids (the client's naming rules), source (what SOURCE may be), notebook (the
inference notebook, nbformat), folders (dataset + kernel folders), upload (kaggle client),
smoke (nbclient + host_check, the host's view of submission.zip).
"""
