"""Task shapes beyond classification: extractive QA's windows, answers and scores."""
