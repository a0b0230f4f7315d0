"""Looking inside a trained network: evaluation (predictions, metrics, confusion, top losses),
inspection (filters, activations) and explanation (attribution, feature visualisation,
embeddings). Everything here returns values; ``cnnlab.report`` and the lab render them.
"""
