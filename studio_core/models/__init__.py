"""Step 2, Model Resolve: model references, the embedded model, tiny random models, safe loading."""
