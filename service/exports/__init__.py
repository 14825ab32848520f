"""Export bundles for auditors and regulators: a model's signed history with proofs,
keys, manifests and reports in one zip, and the standalone verifier that checks it."""
