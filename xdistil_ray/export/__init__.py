"""Step `student`: the Hugging Face folder, its ONNX copies, its model card, answering."""
