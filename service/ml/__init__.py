"""Machine-learning code shared by serving, reports and runners: model loading, the network layout, explainers."""
