"""The connector hub: where the studio's data and models come from and where its runs are tracked.

Three small contracts, one module each: `data.DataConnector` (local data files under the allowed roots),
`model.ModelConnector` (local model folders, the Hugging Face Hub) and `tracking.Tracker` (MLflow,
TensorBoard, W&B). Which are installed and usable, with the install command for the rest, is
`studio_core.catalog.all_connectors()`. Implementations import their optional package only when used.
"""
