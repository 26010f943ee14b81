"""Steps 9 and 10: the merged model to ONNX (checked against PyTorch), then compiled for its target."""
