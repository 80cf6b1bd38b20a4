"""Stage 2, windows -> a trained decoder in models/<name>/: the BiLSTM, its fit, evaluation on the
test split (metrics, report, naive Bayes baseline), hyperparameter search and the training-share sweep."""
