"""Assembling and deploying the Hugging Face Space."""
