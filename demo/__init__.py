"""The Gradio web demo (local and on the Hugging Face Space)."""
